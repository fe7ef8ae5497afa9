"""deploy/ must stay consistent with the code and the README.

* Prometheus rules and the Grafana dashboard use only the stable metric names of the
  README's "## Metrics" table (histograms through `_bucket`/`_sum`/`_count`), and that
  table lists exactly what the processor and worker metric bundles export.
* The dashboard is valid JSON with a Prometheus data-source variable.
* The Kubernetes manifests are YAML objects (fully checked only if PyYAML is installed;
  it is not a dependency), their AGENTSTREAM_* settings exist, and the agentstream
  subcommands and options they run exist in the click group.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry

from agentstream.streams.cli import cli
from agentstream.streams.processor.metrics import ProcessorMetrics
from agentstream.streams.settings import Settings
from agentstream.streams.worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "agentstream.json"
MANIFESTS = sorted(p for p in (DEPLOY / "kubernetes").rglob("*.y*ml")
                   if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml")
CONFIGMAP = DEPLOY / "kubernetes" / "00-configmap.yaml"

METRIC_NAME = re.compile(r"agentstream_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
FAUST_PREFIX = "agentstream_faust_"  # the processor's Faust sensor (streams/processor/app.py)
# Variables the manifests define for themselves that are not Settings fields.
MANIFEST_ONLY_VARIABLES = {"AGENTSTREAM_APP_MODULE"}
# Subcommands the manifests must run (the brief of deploy/).
REQUIRED_SUBCOMMANDS = {("processor",), ("worker",), ("topics", "create")}


# --- the README's metrics table -----------------------------------------------------


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, labels) for every backticked name in the first column of the table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Metrics\n" in readme, "README.md has no '## Metrics' section"
    section = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    metrics: dict[str, tuple[str, set[str]]] = {}
    for line in section.splitlines():
        if not line.lstrip().startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        for name in re.findall(r"`([^`]+)`", cells[0]):
            metrics[name] = (cells[1], set(re.findall(r"`([^`]+)`", cells[2])))
    return metrics


DOCUMENTED = documented_metrics()


def exposed_name(family_name: str, family_type: str) -> str:
    """The name a metric family is scraped under (what the README documents)."""
    return {"counter": f"{family_name}_total", "info": f"{family_name}_info"}.get(family_type, family_name)


def test_readme_metrics_table_lists_exactly_what_the_code_exports() -> None:
    registry = CollectorRegistry()
    ProcessorMetrics.create(registry)
    WorkerMetrics.create(registry)
    exported = {exposed_name(f.name, f.type): f.type for f in registry.collect()}
    assert exported, "the metric bundles registered nothing"
    ours = {name for name in DOCUMENTED if not name.startswith(FAUST_PREFIX)}
    assert ours == set(exported), (
        f"README only: {sorted(ours - set(exported))}; code only: {sorted(set(exported) - ours)}"
    )
    for name, kind in exported.items():
        assert DOCUMENTED[name][0] == kind, f"README says {name} is a {DOCUMENTED[name][0]}, the code a {kind}"


def test_the_faust_metrics_the_readme_names_are_those_of_the_processors_faust_sensor() -> None:
    registry = CollectorRegistry()
    FaustMetrics.create(registry, FAUST_PREFIX.rstrip("_"))
    exported = {exposed_name(f.name, f.type): f.type for f in registry.collect()}
    named = {name: kind for name, (kind, _) in DOCUMENTED.items() if name.startswith(FAUST_PREFIX)}
    assert named, "the README names no Faust metric"
    for name, kind in named.items():
        assert exported.get(name) == kind, f"Faust's sensor exports no {kind} {name}"


# --- metric names in rules and dashboard ----------------------------------------------


def base_metric(name: str) -> str:
    """Strip a histogram series suffix, but only from a documented histogram."""
    if name in DOCUMENTED:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        stem = name.removesuffix(suffix)
        if stem != name and DOCUMENTED.get(stem, ("",))[0] == "histogram":
            return stem
    return name


@pytest.mark.parametrize("path", [RULES, DASHBOARD], ids=lambda p: p.name)
def test_only_documented_metric_names_are_used(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    used = set(METRIC_NAME.findall(text))
    assert used, f"{path.name} references no agentstream metric"
    unknown = sorted(name for name in used if base_metric(name) not in DOCUMENTED)
    assert not unknown, f"{path.name} uses metrics not in the README's Metrics table: {unknown}"


@pytest.mark.parametrize("path", [RULES, DASHBOARD], ids=lambda p: p.name)
def test_only_known_label_names_are_used(path: Path) -> None:
    """Labels in `by (...)`, `ignoring (...)` and `{label="..."}` exist on the metrics or the targets."""
    text = path.read_text(encoding="utf-8")
    allowed = set().union(*(labels for _, labels in DOCUMENTED.values()))
    allowed |= {"le", "pod", "instance", "job", "namespace"}  # histogram buckets, scrape targets
    grouped = re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text)
    used = {label.strip() for group in grouped for label in group.split(",") if label.strip()}
    used |= set(re.findall(r"[{,]\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\\?\"", text))
    assert not used - allowed, f"{path.name} uses unknown labels: {sorted(used - allowed)}"


# --- Grafana ----------------------------------------------------------------------------


def test_grafana_dashboard_is_valid_json_with_a_prometheus_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [p for p in panels if p["type"] != "row"]
    assert graphs
    for panel in graphs:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert METRIC_NAME.search(target["expr"]), f"{panel['title']!r}: {target['expr']}"


# --- Prometheus rules (structure needs PyYAML) ------------------------------------------


def test_prometheus_rules_structure() -> None:
    yaml = pytest.importorskip("yaml")
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    assert groups
    for group in groups:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            if "alert" in rule:
                assert rule["labels"]["severity"] in {"critical", "warning", "info"}
                assert rule["annotations"]["summary"]


# --- Kubernetes manifests ----------------------------------------------------------------


def _documents_text(path: Path) -> list[str]:
    """The YAML documents of a file, without those holding only comments."""
    chunks = re.split(r"^---\s*$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    meaningful = [
        chunk
        for chunk in chunks
        if any(line.strip() and not line.lstrip().startswith("#") for line in chunk.splitlines())
    ]
    return meaningful


def test_there_are_manifests() -> None:
    assert MANIFESTS, "deploy/kubernetes holds no *.yaml"
    kinds = " ".join(p.read_text(encoding="utf-8") for p in MANIFESTS)
    for kind in ("ConfigMap", "Job", "StatefulSet", "Service", "Deployment", "HorizontalPodAutoscaler"):
        assert re.search(rf"^kind:\s*{kind}\s*$", kinds, re.MULTILINE), f"no {kind} manifest"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_each_manifest_document_has_apiversion_and_kind(path: Path) -> None:
    documents = _documents_text(path)
    assert documents, f"{path.name} is empty"
    for document in documents:
        assert re.search(r"^apiVersion:\s*\S+", document, re.MULTILINE), f"{path.name}: a document has no apiVersion"
        assert re.search(r"^kind:\s*\S+", document, re.MULTILINE), f"{path.name}: a document has no kind"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_each_manifest_parses_as_kubernetes_objects(path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert documents
    for document in documents:
        assert isinstance(document, dict)
        assert document["apiVersion"] and document["kind"] and document["metadata"]["name"]


def _pod_specs(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {})
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    return [template] if template else []


def test_ports_of_scrape_annotations_probes_and_args_agree() -> None:
    yaml = pytest.importorskip("yaml")
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            for template in _pod_specs(document or {}):
                annotations = template.get("metadata", {}).get("annotations", {})
                if annotations.get("prometheus.io/scrape") != "true":
                    continue
                port = int(annotations["prometheus.io/port"])
                (container,) = template["spec"]["containers"]
                assert port in {p["containerPort"] for p in container["ports"]}, path.name
                args = container["args"]
                assert int(args[args.index("--http-port") + 1]) == port, path.name
                for probe in ("readinessProbe", "livenessProbe"):
                    assert container[probe]["httpGet"]["path"] in {"/ready", "/health"}, path.name


# --- settings and CLI used by the manifests -------------------------------------------------


def test_configmap_sets_only_real_settings() -> None:
    """Settings ignores unknown AGENTSTREAM_* variables, so a typo would pass silently."""
    known = {f"AGENTSTREAM_{field.upper()}" for field in Settings.model_fields}
    text = "\n".join(p.read_text(encoding="utf-8") for p in MANIFESTS)
    used = set(re.findall(r"\b(AGENTSTREAM_[A-Z_]+)\b", text))
    assert {"AGENTSTREAM_KAFKA_BOOTSTRAP", "AGENTSTREAM_TOPIC_PREFIX", "AGENTSTREAM_PARTITIONS",
            "AGENTSTREAM_APP_ID", "AGENTSTREAM_DATA_DIR"} <= used
    assert not used - known - MANIFEST_ONLY_VARIABLES, f"unknown settings: {sorted(used - known - MANIFEST_ONLY_VARIABLES)}"
    configmap = CONFIGMAP.read_text(encoding="utf-8")
    for variable in set(re.findall(r"\$\(([A-Z_]+)\)", text)):
        defined = re.search(rf"^\s*{variable}:", configmap, re.MULTILINE) or f"name: {variable}" in text
        assert defined, f"$({variable}) is used in a manifest but defined nowhere"


def agentstream_invocations() -> list[list[str]]:
    """The argument lists of every container whose command is `agentstream`."""
    try:
        import yaml
    except ImportError:
        yaml = None
    invocations: list[list[str]] = []
    for path in MANIFESTS:
        text = path.read_text(encoding="utf-8")
        if yaml is None:  # the manifests write command and args as JSON-style flow lists
            for args in re.findall(r'command:\s*\["agentstream"\]\s*\n(?:\s*#.*\n)*\s*args:\s*(\[.*\])', text):
                invocations.append(json.loads(args))
            continue
        for document in yaml.safe_load_all(text):
            for template in _pod_specs(document or {}):
                for container in template["spec"]["containers"]:
                    if container.get("command") == ["agentstream"]:
                        invocations.append([str(a) for a in container.get("args", [])])
    return invocations


def resolve(args: list[str]) -> tuple[tuple[str, ...], click.Command, list[str]]:
    """Walk the click groups along args: (subcommand path, command, remaining args)."""
    command: click.Command = cli
    path: list[str] = []
    rest = list(args)
    while isinstance(command, click.Group):
        assert rest, f"`agentstream {' '.join(path)}` needs a subcommand"
        name = rest.pop(0)
        assert name in command.commands, f"`agentstream {' '.join(path + [name])}` does not exist"
        command = command.commands[name]
        path.append(name)
    return tuple(path), command, rest


def test_required_subcommands_exist_in_the_cli() -> None:
    for path in REQUIRED_SUBCOMMANDS:
        group: click.Command = cli
        for name in path:
            assert isinstance(group, click.Group) and name in group.commands, f"no `agentstream {' '.join(path)}`"
            group = group.commands[name]


def test_manifests_run_existing_subcommands_with_existing_options() -> None:
    invocations = agentstream_invocations()
    used = set()
    for args in invocations:
        path, command, rest = resolve(args)
        used.add(path)
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        for arg in rest:
            if arg.startswith("-"):
                assert arg.split("=", 1)[0] in options, f"`agentstream {' '.join(path)}` has no option {arg}"
    assert REQUIRED_SUBCOMMANDS <= used, f"manifests run {sorted(used)}"
