"""`agentstream dev --broker apache` and `agentstream broker --apache`: Apache Kafka for development.

The restart test starts a JVM twice, so it runs only in the Apache pass of the suite
(`AGENTSTREAM_TEST_BROKER=apache`) and only where `java` and `mvn` exist; the error tests
start no broker and run everywhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream.agents import AgentClient
from agentstream.streams.broker.embedded import free_port
from agentstream.streams.devstack import http_ok
from agentstream.streams.settings import Settings

from support import APPS, get_json, poll, wait_for

pytestmark = pytest.mark.integration

NEEDS_APACHE = pytest.mark.skipif(
    os.environ.get("AGENTSTREAM_TEST_BROKER") != "apache" or not (shutil.which("java") and shutil.which("mvn")),
    reason="starts Apache Kafka: only with AGENTSTREAM_TEST_BROKER=apache, java and mvn",
)


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, log: Path | None = None
        ) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if k != "AGENTSTREAM_KAFKA_BOOTSTRAP"}
    output = open(log, "ab") if log else subprocess.PIPE  # noqa: SIM115 - the child writes to it
    return subprocess.Popen([sys.executable, "-m", "agentstream.streams.cli", *args], env={**clean, **(env or {})},
                            cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


class Dev:
    """One `agentstream dev --broker apache` run on a data folder, with fixed ports for the test to use."""

    def __init__(self, data_dir: Path, broker_port: int, log: Path) -> None:
        self.http_port = free_port()
        self.log = log
        self.process = cli("dev", "--broker", "apache", "--data-dir", str(data_dir), "--app", "recorder",
                           "--app-dir", str(APPS), "--broker-port", str(broker_port),
                           "--http-port", str(self.http_port), "--worker-http-port", str(free_port()),
                           cwd=data_dir.parent, log=log)
        self.url = f"http://127.0.0.1:{self.http_port}"

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, f"dev exited: {self.log.read_text()[-3000:]}"
            return http_ok(f"{self.url}/ready")

        wait_for(ready, 90, "dev ready")

    def stop(self) -> int:
        """SIGTERM (what dev treats like Ctrl-C), then wait until it stopped everything it started."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=90)


@pytest.fixture
def runs() -> Iterator[list[Dev]]:
    started: list[Dev] = []
    yield started
    for dev in started:  # a failed test must not leave a JVM behind
        if dev.process.poll() is None:
            os.killpg(dev.process.pid, signal.SIGTERM)
            dev.process.wait(timeout=90)


def notes(url: str) -> list[int] | None:
    status, body = get_json(f"{url}/agents/survivor")
    return body["fields"]["notes"] if status == 200 else None


@pytest.mark.apache
@NEEDS_APACHE
async def test_an_agent_survives_a_restart_of_dev_on_apache_kafka(tmp_path: Path, runs: list[Dev]) -> None:
    data_dir = tmp_path / "dev-data"
    broker_port = free_port()
    bootstrap = f"127.0.0.1:{broker_port}"

    first = Dev(data_dir, broker_port, tmp_path / "dev-1.log")
    runs.append(first)
    first.wait_ready()
    async with AgentClient(Settings(kafka_bootstrap=bootstrap, api_url=first.url)) as client:
        await client.schedule_agent("Recorder", "survivor")
        for n in range(5):
            await client.send_agent_event("survivor", "note", {"n": n})
    await poll(lambda: notes(first.url) == [0, 1, 2, 3, 4], what="5 notes applied")
    assert first.stop() == 0, first.log.read_text()[-3000:]
    assert (data_dir / "apache-kafka").is_dir()

    second = Dev(data_dir, broker_port, tmp_path / "dev-2.log")
    runs.append(second)
    second.wait_ready()
    assert notes(second.url) == [0, 1, 2, 3, 4]
    async with AgentClient(Settings(kafka_bootstrap=bootstrap, api_url=second.url)) as client:
        await client.send_agent_event("survivor", "note", {"n": 5})
    await poll(lambda: notes(second.url) == [0, 1, 2, 3, 4, 5], what="the agent takes a note after the restart")
    assert second.stop() == 0, second.log.read_text()[-3000:]


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = cli(*args, env=env, cwd=cwd)
    out, _ = process.communicate(timeout=60)
    return process.returncode, out.decode()


def test_broker_apache_without_java_says_what_to_install(tmp_path: Path) -> None:
    cache = os.environ.get("AGENTSTREAM_KAFKA_CACHE") or str(Path.home() / ".cache" / "agentstream")
    if not any(Path(cache).glob("apache-kafka-*/resolved")):
        pytest.skip("the broker's jars are not resolved here (that needs mvn, tested below)")
    code, out = run_cli("broker", "--apache", env={"PATH": str(tmp_path)}, cwd=tmp_path)
    assert code == 1
    assert "`java`" in out and "openjdk-17" in out, out


def test_broker_apache_without_maven_says_what_to_install(tmp_path: Path) -> None:
    code, out = run_cli("broker", "--apache", "--data-dir", str(tmp_path / "kafka"),
                        env={"PATH": str(tmp_path), "AGENTSTREAM_KAFKA_CACHE": str(tmp_path / "cache")}, cwd=tmp_path)
    assert code == 1
    assert "`mvn`" in out and "apt-get install maven" in out, out


def test_dev_data_dir_needs_the_apache_broker(tmp_path: Path) -> None:
    code, out = run_cli("dev", "--data-dir", str(tmp_path), env={}, cwd=tmp_path)
    assert code == 2
    assert "--broker apache" in out, out
