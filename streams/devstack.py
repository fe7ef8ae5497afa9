"""Run processors and workers as child processes: for `agentstream dev` and the tests.

Each component is a real OS process started through the CLI, so it can be killed with
SIGKILL and restarted exactly like a pod.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from agentstream.topics.exceptions import AgentstreamError

from .broker.apache import ApacheKafkaCluster, dev_cluster
from .broker.embedded import EmbeddedBroker, free_port

STOP_TIMEOUT_S = 15.0  # how long processor and worker get to shut down cleanly before SIGKILL
# How often a starting component's readiness is asked: what a waiter learns late adds to every
# restart it times (W3), and a refused connection costs next to nothing.
READY_POLL_S = 0.02


class ProcessStartError(AgentstreamError):
    """A child component exited or never became ready."""


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


class ManagedProcess:
    """One `agentstream <command>` child process with an HTTP port to probe."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        http_port: int,
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.env = dict(env)
        self.http_port = http_port
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> "ManagedProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agentstream.streams.cli", *self.args],
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 60.0, path: str = "/ready") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ProcessStartError(f"{self.name} exited early; its log ({self.log_path}):\n{self.log_tail()}")
            if http_ok(self.url + path):
                return
            time.sleep(READY_POLL_S)
        raise ProcessStartError(f"{self.name} not ready after {timeout}s; its log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def kill(self) -> None:
        """SIGKILL: the crash a pod suffers when its node dies."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 15.0) -> None:
        self.terminate()
        self.wait_or_kill(time.monotonic() + timeout)

    def terminate(self) -> None:
        """SIGTERM: ask it to shut down cleanly (see `wait_or_kill`)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        """Wait for a terminated process until `deadline` (monotonic), then SIGKILL it."""
        if self.process is None:
            return
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()


def component(
    command: str,
    bootstrap: str,
    app: str,
    *,
    log_dir: Path,
    http_port: int | None = None,
    app_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
) -> ManagedProcess:
    """A not-yet-started `agentstream <command>` (processor or worker) on `bootstrap`."""
    port = http_port or free_port()
    args = [command, "--app", app, "--http-port", str(port)]
    if app_dir:
        args += ["--app-dir", str(app_dir)]
    name = name or command
    full_env = {**os.environ, "AGENTSTREAM_KAFKA_BOOTSTRAP": bootstrap, **(env or {})}
    return ManagedProcess(name, args, env=full_env, http_port=port, log_path=log_dir / f"{name}.log")


class DevStack:
    """Broker (embedded unless AGENTSTREAM_KAFKA_BOOTSTRAP is set), topics, one processor, one worker.

    With `broker="apache"` the broker is Apache Kafka keeping its data in
    `data_dir/apache-kafka`, and the processor's state and the logs stay in
    `data_dir/dev`: a stack started again on the same `data_dir` finds its agents.
    """

    def __init__(
        self,
        app: str,
        *,
        app_dir: Path | None = None,
        broker_port: int | None = None,
        http_port: int | None = None,
        worker_http_port: int | None = None,
        partitions: int = 4,
        external_bootstrap: str | None = None,
        broker: Literal["embedded", "apache"] = "embedded",
        data_dir: Path | None = None,
    ) -> None:
        self.app = app
        self.app_dir = app_dir
        self.partitions = partitions
        self.keep = broker == "apache"  # its data outlives the stack
        data_dir = data_dir or Path(".agentstream")
        if self.keep:
            self.workdir = data_dir / "dev"
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="agentstream-dev-"))
        self.broker: EmbeddedBroker | ApacheKafkaCluster | None = None
        if not external_bootstrap:
            self.broker = (dev_cluster(data_dir / "apache-kafka", broker_port) if broker == "apache"
                           else EmbeddedBroker(port=broker_port))
        self.bootstrap = external_bootstrap or self.broker.bootstrap  # type: ignore[union-attr]
        self.processor = component(
            "processor", self.bootstrap, app, log_dir=self.workdir, http_port=http_port, app_dir=app_dir,
            env={"AGENTSTREAM_DATA_DIR": str(self.workdir / "state")},
        )
        self.worker = component(
            "worker", self.bootstrap, app, log_dir=self.workdir, http_port=worker_http_port, app_dir=app_dir
        )

    def start(self, progress: Callable[[str], None] = print) -> "DevStack":
        import asyncio

        from .kafka import ensure_topics
        from .security import kafka_options
        from .settings import Settings

        if isinstance(self.broker, ApacheKafkaCluster):
            progress(f"starting Apache Kafka (data in {self.broker.folder}) ...")
            self.broker.start()
        elif self.broker is not None:
            progress("starting embedded broker ...")
            self.broker.start()
        settings = Settings(kafka_bootstrap=self.bootstrap)
        progress("creating topics ...")
        asyncio.run(
            ensure_topics(self.bootstrap, settings.topic_specs(self.partitions), kafka_options(settings))
        )
        progress("starting processor and worker ...")
        self.processor.start()
        self.worker.start()
        self.processor.wait_ready()
        self.worker.wait_ready()
        return self

    def stop(self, *, keep_logs: bool = False) -> None:
        """Stop everything; the work folder (state and logs) goes too unless `keep_logs` or on Apache Kafka."""
        # Both at once, under one deadline: stopped one after the other, a slow Faust shutdown
        # of each (a loaded machine, a broker going away) added up past what a user waits for.
        components = (self.worker, self.processor)
        for component in components:
            component.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for component in components:
            component.wait_or_kill(deadline)
        if self.broker is not None:
            self.broker.stop()
        if not keep_logs and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "DevStack":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
