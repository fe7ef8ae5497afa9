"""deploy/'s Prometheus rules and Grafana dashboard, run by a real Prometheus (Debian's) that
scrapes a real processor and worker through a small workload with a model call:

* `promtool check rules` accepts the rules;
* Prometheus loads every rule and evaluates each without an error;
* every recording rule, every alert's expression and every panel target returns data;
* both pods export `process_*` and `python_gc_*`, and no `*_created` series.

An alert's expression is asked with its thresholds turned into `bool` comparisons (and
`absent(x)` into `x`): a healthy cluster fires no alert, but the series each one reads
must exist, or the alert could never fire. Without a `prometheus` binary the tests skip,
unless AGENTSTREAM_REQUIRE_PROMETHEUS=1 (CI sets it, and installs the package).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentstream.agents import AgentClient
from agentstream.agents.testing import Reply, ScriptedLLM
from agentstream.streams.broker.embedded import free_port
from agentstream.streams.settings import Settings
from support import Cluster

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "agentstream.json"
APP = "approvalapp"  # its Desk agent makes one (streamed) model call
RATE_INTERVAL = "1m"  # what Grafana's $__rate_interval stands for here (scrapes every second)


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("AGENTSTREAM_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"no `{name}` on PATH, and AGENTSTREAM_REQUIRE_PROMETHEUS=1 (apt-get install prometheus)")
        pytest.skip(f"no `{name}` on PATH: install Debian's prometheus package (.ci/run does)")
    return path


def test_promtool_accepts_the_rules() -> None:
    checked = subprocess.run([binary("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- the expressions -------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]]


def as_data_query(alert_expr: str) -> str:
    """The alert's expression with every threshold comparison made `bool` (kept series are
    then 0 or 1 instead of dropped) and `absent(x)` asked as `x`."""
    expr = alert_expr.strip()
    absent = re.fullmatch(r"absent\((.*)\)", expr, flags=re.DOTALL)
    if absent:
        return absent.group(1)
    return re.sub(r"(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\b", r"\1 bool \2", expr)


def expressions() -> dict[str, str]:
    """A name for people -> the PromQL asked: recording rules (their output series too), alerts, panels."""
    asked: dict[str, str] = {}
    for rule in rules():
        if "record" in rule:
            asked[f"record {rule['record']}: expr"] = rule["expr"]
            asked[f"record {rule['record']}: series"] = rule["record"]
        else:
            asked[f"alert {rule['alert']}"] = as_data_query(rule["expr"])
    for panel in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]:
        for target in panel.get("targets", []):
            asked[f"panel {panel['title']!r} {target['refId']}"] = target["expr"].replace("$__rate_interval",
                                                                                        RATE_INTERVAL)
    return asked


def test_alert_thresholds_become_bool_comparisons() -> None:
    assert as_data_query("sum(x{a!=\"b\"}) > 0") == "sum(x{a!=\"b\"}) > bool 0"
    assert as_data_query("(a / b) > 0.2\nand\nsum(c) >= 10") == "(a / b) > bool 0.2\nand\nsum(c) >= bool 10"
    assert as_data_query("absent(agentstream_processor_ready)") == "agentstream_processor_ready"


# --- a real Prometheus -----------------------------------------------------------------


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # a bad query: 400 with the parser's error in the body
            return json.loads(exc.read())

    def query(self, expr: str) -> Any:
        return self.api("query", query=expr)

    def wait_for(self, expr: str, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            answer = self.query(expr)
            if answer.get("status") == "success" and answer["data"]["result"]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus: {what} not within {timeout}s ({expr} -> {answer})")
            time.sleep(0.25)


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """Starts Prometheus scraping the given targets every second, with deploy/'s rules loaded."""
    executable = binary("prometheus")
    started: list[subprocess.Popen[bytes]] = []

    def start(targets: dict[str, str]) -> Prometheus:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [urllib.parse.urlsplit(url).netloc]}]}
                for job, url in targets.items()
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        started.append(subprocess.Popen(
            [executable, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        ))
        prometheus = Prometheus(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return prometheus
            except (urllib.error.URLError, ConnectionError):
                pass
            assert started[-1].poll() is None, (tmp_path / "prometheus.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "Prometheus not ready within 30s"
            time.sleep(0.2)

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.integration
async def test_every_rule_and_panel_returns_data_from_a_real_prometheus(cluster: Cluster, prometheus_for: Any) -> None:
    replies = [Reply.rate_limited(retry_after=0), Reply.text("Hello.").with_usage(30, 4, cached=10)]
    with ScriptedLLM(replies) as llm:
        processor = cluster.processor(app=APP).start()
        worker = cluster.worker(app=APP, env={"AGENTSTREAM_LLM_BASE_URL": llm.base_url,
                                              "APPROVALAPP_LOG": str(cluster.tmp / "refunds.jsonl")}).start()
        await asyncio.gather(asyncio.to_thread(processor.wait_ready), asyncio.to_thread(worker.wait_ready))
        prometheus = prometheus_for({"processor": processor.url, "worker": worker.url})
        await asyncio.to_thread(prometheus.wait_for, 'count(up == 1) == 2', "both targets up")
        async with AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix,
                                        api_url=processor.url)) as client:
            await client.schedule_agent("ApprovalApp.Desk", "desk-prometheus", "Say hello.")
            assert (await client.get_agent_result("desk-prometheus", timeout=60))["text"] == "Hello."
        # The workload's last counts scraped, and the rules evaluated over them a few times.
        await asyncio.to_thread(prometheus.wait_for, 'agentstream_llm_calls_total{outcome="ok"} == 1',
                                "the model call scraped")
        await asyncio.to_thread(prometheus.wait_for, "count_over_time(agentstream_llm_calls_total[1m]) >= 3",
                                "three scrapes of it")

    loaded = prometheus.api("rules")["data"]["groups"]
    evaluated = {rule.get("name"): rule for group in loaded for rule in group["rules"]}
    expected = {rule.get("alert") or rule.get("record") for rule in rules()}
    assert set(evaluated) == expected
    broken = {name: rule.get("lastError") for name, rule in evaluated.items() if rule.get("health") != "ok"}
    assert not broken, f"rules Prometheus could not evaluate: {broken}"

    asked = {
        **expressions(),
        **{f"{job}'s process and Python metrics: {name}": f'{name}{{job="{job}"}}'
           for job in ("processor", "worker")
           for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_gc_collections_total")},
    }
    created = prometheus.query('{__name__=~".+_created"}')["data"]["result"]
    assert not created, f"*_created series are exported: {sorted({s['metric']['__name__'] for s in created})}"
    # Recording rules run on Prometheus's own clock (every second here, later on a loaded machine):
    # an expression gets until the deadline to return data; one that does not parse fails at once.
    failures: dict[str, str] = {}
    pending = dict(asked)
    deadline = time.monotonic() + 60
    while pending:
        for name, expr in list(pending.items()):
            answer = prometheus.query(expr)
            if answer.get("status") != "success":
                failures[name] = f"does not parse or evaluate: {answer.get('error')} ({expr})"
                del pending[name]
            elif answer["data"]["result"]:
                del pending[name]
        if pending and time.monotonic() > deadline:
            failures.update({name: f"returns no data within 60s ({expr})" for name, expr in pending.items()})
            break
        if pending:
            time.sleep(0.5)
    assert not failures, "\n".join(f"{name}: {why}" for name, why in failures.items())
