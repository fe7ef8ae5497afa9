"""The `agentstream` command line, run as real subprocesses against the embedded broker."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agentstream.streams.broker.embedded import free_port, free_ports
from agentstream.topics import TopicNames
from support import get_json, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
APPS = str(REPO / "tests" / "apps")
APP_ARGS = ["--app", "recorder", "--app-dir", APPS]
CLI = [sys.executable, "-m", "agentstream.streams.cli"]


# --- helpers --------------------------------------------------------------------------


def cli_env(**settings: str) -> dict[str, str]:
    """os.environ without any AGENTSTREAM_* variable, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def fresh_prefix() -> str:
    return f"cli{uuid.uuid4().hex[:10]}."


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that is bound (so nobody else takes it) but refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (they may sit in their own sessions)."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (nobody may reap orphans in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def kill_tree(process: subprocess.Popen[Any], extra: Iterable[int] = ()) -> None:
    """SIGKILL the process group of `process` and every descendant (also in other sessions)."""
    victims = set(extra)
    if process.poll() is None:
        victims.update(descendants(process.pid))
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in victims:
        for kill in (lambda p: os.killpg(p, signal.SIGKILL), lambda p: os.kill(p, signal.SIGKILL)):
            try:
                kill(pid)
            except OSError:
                pass
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60.0, what: str | None = None, cwd: Path = REPO
) -> Result:
    """Run one CLI command to completion; a hang past `timeout` fails the test (and kills it)."""
    process = subprocess.Popen(
        [*CLI, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        stdout, stderr = process.communicate()
        pytest.fail(f"`agentstream {' '.join(args)}` ({what or 'command'}) hung for more than {timeout}s:\n{stdout}\n{stderr}")
    finally:
        if process.poll() is None:
            kill_tree(process)
    return Result(process.returncode, stdout, stderr)


def assert_clean_failure(result: Result) -> None:
    assert result.returncode != 0, f"expected a failure, got exit 0:\n{result.output}"
    assert "Traceback" not in result.output, f"a Python traceback leaked:\n{result.output}"


@dataclass
class DevProcess:
    """An `agentstream dev` child whose stdout is read line by line on a thread."""

    process: subprocess.Popen[str]
    stderr_path: Path
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)
    children: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def read_until(self, pattern: str, timeout: float) -> re.Match[str]:
        """Consume stdout lines until one matches `pattern`; fail past `timeout` or at EOF."""
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if match := re.search(pattern, line):
                return match
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n{self.transcript()}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.process.wait(10)
                raise AssertionError(
                    f"dev exited ({self.process.returncode}) before printing {pattern!r}:\n{self.transcript()}"
                )
            self.lines.append(line)
            if match := re.search(pattern, line):
                return match

    def drain(self, timeout: float) -> None:
        """Consume the remaining stdout lines up to EOF (at most `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                return
            if line is None:
                return
            self.lines.append(line)

    def transcript(self) -> str:
        try:
            err = self.stderr_path.read_text(errors="replace")
        except OSError:
            err = ""
        return "stdout:\n" + "\n".join(self.lines) + "\nstderr:\n" + err


@contextmanager
def dev_process(tmp_path: Path, *args: str) -> Iterator[DevProcess]:
    """`agentstream dev` with no AGENTSTREAM_* variables, in its own session; killed (with children) on failure."""
    stderr_path = tmp_path / f"dev-{uuid.uuid4().hex[:6]}.stderr"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [*CLI, "dev", *args], cwd=REPO, env=cli_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True,
        )
    dev = DevProcess(process, stderr_path)
    try:
        yield dev
    finally:
        if process.poll() is None:
            kill_tree(process, dev.children)
        else:
            for pid in dev.children:
                if alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass


ADDRESSES = {
    "bootstrap": r"Kafka bootstrap\s+(\S+):(\d+)",
    "api": r"HTTP API\s+(http://\S+?):(\d+)\s*$",
    "worker": r"worker metrics\s+(http://\S+?):(\d+)/metrics",
}


def read_addresses(dev: DevProcess, timeout: float = 90.0) -> dict[str, tuple[str, int]]:
    found = {}
    for name, pattern in ADDRESSES.items():
        match = dev.read_until(pattern, timeout)
        found[name] = (match.group(1), int(match.group(2)))
    return found


def interrupt_and_wait(dev: DevProcess, timeout: float = 60.0, sig: signal.Signals = signal.SIGINT) -> int:
    """SIGINT as a terminal's Ctrl-C sends it (to the process group); other signals to dev alone."""
    dev.children = descendants(dev.process.pid)
    if sig == signal.SIGINT:
        os.killpg(dev.process.pid, sig)
    else:
        os.kill(dev.process.pid, sig)
    try:
        return dev.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"dev did not exit within {timeout}s of {sig.name}:\n{dev.transcript()}") from None


def json_object_in(text: str) -> dict[str, Any]:
    """The first top-level JSON object printed in `text`."""
    start = text.find("{")
    assert start >= 0, f"no JSON object in:\n{text}"
    value, _ = json.JSONDecoder().raw_decode(text[start:])
    return value


async def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, count, 1) for name, count in partitions.items()])
    finally:
        await admin.close()


# --- topics ---------------------------------------------------------------------------


def test_topics_create_is_idempotent_and_list_shows_partitions(broker: str) -> None:
    prefix = fresh_prefix()
    env = cli_env(AGENTSTREAM_KAFKA_BOOTSTRAP=broker, AGENTSTREAM_TOPIC_PREFIX=prefix)
    names = TopicNames(prefix)
    expected = {names.agent_events, names.step_results, names.agent_updates, names.agent_stream,
                names.dead_letters, names.step_commands("q1")}
    line = re.compile(r"^(created|exists)\s+(\S+)\s*$")

    def statuses(result: Result) -> dict[str, str]:
        return {m.group(2): m.group(1) for m in map(line.match, result.stdout.splitlines()) if m}

    first = run_cli("topics", "create", "--partitions", "3", "--task-queue", "q1", env=env)
    assert first.returncode == 0, first.output
    assert statuses(first) == {name: "created" for name in expected}, first.stdout
    assert "share 3 partitions" in first.stdout

    second = run_cli("topics", "create", "--task-queue", "q1", env=env)
    assert second.returncode == 0, second.output
    assert statuses(second) == {name: "exists" for name in expected}, second.stdout

    listing = run_cli("topics", "list", env=env)
    assert listing.returncode == 0, listing.output
    counts = {}
    for row in listing.stdout.splitlines():
        parts = row.split()
        if len(parts) == 2:
            counts[parts[0]] = parts[1]
    for name in expected:
        assert counts.get(name) == "3", f"{name} not listed with 3 partitions:\n{listing.stdout}"


async def test_processor_refuses_topics_that_are_not_copartitioned(broker: str) -> None:
    prefix = fresh_prefix()
    names = TopicNames(prefix)
    await create_topics(broker, {
        names.agent_events: 4, names.step_results: 2, names.agent_updates: 4, names.agent_stream: 4,
        names.dead_letters: 4, names.step_commands("restack"): 4,
    })
    env = cli_env(AGENTSTREAM_KAFKA_BOOTSTRAP=broker, AGENTSTREAM_TOPIC_PREFIX=prefix,
                  AGENTSTREAM_APP_ID=f"app-{uuid.uuid4().hex[:8]}")

    result = run_cli("processor", *APP_ARGS, "--http-port", str(free_port()), env=env, timeout=90,
                     what="processor on non-co-partitioned topics")

    assert_clean_failure(result)
    assert names.agent_events in result.stderr and names.step_results in result.stderr, result.stderr
    assert "4" in result.stderr and "2" in result.stderr
    assert re.search(r"recreate|add partitions|agentstream topics", result.stderr, re.I), (
        f"the error does not say how to fix it:\n{result.stderr}"
    )


# --- errors ---------------------------------------------------------------------------

UNREACHABLE_COMMANDS = {
    "send": ["send", "some-agent", "hello"],
    "schedule": ["schedule", "SomeAgent"],
    "cancel": ["cancel", "some-agent"],
    "topics-create": ["topics", "create"],
    "topics-list": ["topics", "list"],
    "processor": ["processor", *APP_ARGS, "--http-port", "0"],
    "worker": ["worker", *APP_ARGS, "--http-port", "0"],
}


@pytest.mark.parametrize("command", list(UNREACHABLE_COMMANDS), ids=list(UNREACHABLE_COMMANDS))
def test_unreachable_broker_gives_a_clear_error(command: str) -> None:
    with closed_port() as port:
        address = f"127.0.0.1:{port}"
        env = cli_env(AGENTSTREAM_KAFKA_BOOTSTRAP=address, AGENTSTREAM_API_URL=f"http://{address}",
                      AGENTSTREAM_TOPIC_PREFIX=fresh_prefix())
        started = time.monotonic()
        result = run_cli(*UNREACHABLE_COMMANDS[command], env=env, timeout=60, what="unreachable broker")
        elapsed = time.monotonic() - started

    assert_clean_failure(result)
    assert address in result.stderr, result.stderr
    assert "agentstream dev" in result.stderr and "AGENTSTREAM_KAFKA_BOOTSTRAP" in result.stderr, result.stderr
    assert elapsed < 30, f"giving up on an unreachable broker took {elapsed:.1f}s"


def test_unreachable_api_gives_a_clear_error() -> None:
    with closed_port() as port:
        url = f"http://127.0.0.1:{port}"
        result = run_cli("state", "some-agent", env=cli_env(AGENTSTREAM_API_URL=url), timeout=60)
    assert_clean_failure(result)
    assert url in result.stderr and "agentstream dev" in result.stderr, result.stderr


def test_send_rejects_bad_json() -> None:
    with closed_port() as port:  # must fail before touching Kafka
        result = run_cli("send", "a1", "ev", "{bad", env=cli_env(AGENTSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}"))
    assert_clean_failure(result)
    assert "not valid JSON" in result.stderr, result.stderr
    assert "cannot reach Kafka" not in result.stderr


def test_schedule_rejects_bad_input_json() -> None:
    with closed_port() as port:
        result = run_cli("schedule", "Recorder", "--input", "{bad", *APP_ARGS,
                         env=cli_env(AGENTSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}"))
    assert_clean_failure(result)
    assert "not valid JSON" in result.stderr and "--input" in result.stderr, result.stderr


def test_schedule_unknown_agent_type_lists_the_known_ones() -> None:
    with closed_port() as port:
        result = run_cli("schedule", "NoSuchAgent", *APP_ARGS,
                         env=cli_env(AGENTSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}"))
    assert_clean_failure(result)
    assert "NoSuchAgent" in result.stderr and "Recorder" in result.stderr, result.stderr


MISSING_APP_COMMANDS = {
    "schedule": ["schedule", "Recorder"],
    "processor": ["processor", "--http-port", "0"],
    "worker": ["worker", "--http-port", "0"],
}


@pytest.mark.parametrize("command", list(MISSING_APP_COMMANDS), ids=list(MISSING_APP_COMMANDS))
def test_missing_app_module_gives_a_clear_error(command: str) -> None:
    with closed_port() as port:
        result = run_cli(*MISSING_APP_COMMANDS[command], "--app", "no_such_app_module", "--app-dir", "tests/apps",
                         env=cli_env(AGENTSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}"))
    assert_clean_failure(result)
    assert "no_such_app_module" in result.stderr and "--app" in result.stderr, result.stderr
    assert "--app-dir" in result.stderr or "tests/apps" in result.stderr, result.stderr


# --- dev and demo ---------------------------------------------------------------------


DEV_DEFAULTS = {"bootstrap": 9092, "api": 6066, "worker": 6067}  # the CLI's and the client's defaults


def test_dev_runs_everything_on_the_default_ports_prints_rejections_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    defaults_free = not any(accepts_connections(port) for port in DEV_DEFAULTS.values())
    with dev_process(tmp_path, *APP_ARGS) as dev:
        addresses = read_addresses(dev)
        bootstrap = "%s:%d" % addresses["bootstrap"]
        api = "%s:%d" % addresses["api"]
        dev.children = descendants(dev.process.pid)
        if defaults_free:  # then dev takes them, and the CLI needs no variable at all
            assert {name: port for name, (_, port) in addresses.items()} == DEV_DEFAULTS, dev.transcript()
            env = cli_env()
        else:
            env = cli_env(AGENTSTREAM_KAFKA_BOOTSTRAP=bootstrap, AGENTSTREAM_API_URL=api)

        wait_for(lambda: get_json(f"{api}/ready")[0] == 200, 30, f"{api}/ready answering 200")
        status, types = get_json(f"{api}/agent-types")
        assert status == 200 and "Recorder" in types, types
        assert "note" in types["Recorder"]["events"]
        assert types["Recorder"]["payloads"]["note"]["schema"]["required"] == ["n"]  # what to send, as JSON schema

        scheduled = run_cli("schedule", "Recorder", "--id", "x", env=env)
        assert scheduled.returncode == 0, scheduled.output
        assert json_object_in(scheduled.stdout)["agent_id"] == "x"
        sent = run_cli("send", "x", "note", '{"n": 1}', env=env)
        assert sent.returncode == 0, sent.output
        typo = run_cli("send", "x", "nite", '{"n": 2}', "--no-wait", env=env)
        assert typo.returncode == 0, typo.output  # sent without waiting: dev's terminal shows the rejection
        dev.read_until(r"WARNING agent x: record dead-lettered \[unknown_event\] .*has no event 'nite'", 60)

        def notes() -> list[int] | None:
            result = run_cli("state", "x", env=env)
            return json_object_in(result.stdout)["fields"]["notes"] if result.returncode == 0 else None

        assert wait_for(notes, 60, "agent x holding notes == [1]") == [1]

        ports = [addresses[name][1] for name in ("bootstrap", "api", "worker")]
        assert all(accepts_connections(p) for p in ports)
        children = descendants(dev.process.pid)
        assert len(children) >= 3, f"expected broker, processor and worker below dev, found {children}"

        code = interrupt_and_wait(dev)
        assert code == 0, f"dev exited with {code} after Ctrl-C:\n{dev.transcript()}"
        assert "Traceback" not in dev.transcript()
        for port in ports:
            wait_for(lambda: not accepts_connections(port), 10, f"port {port} closed after dev stopped")
        leftover = [pid for pid in children if alive(pid)]
        assert not leftover, f"processes left running after dev stopped: {leftover}"


def _dev_workdirs(pids: list[int]) -> set[Path]:
    """The agentstream-dev-* work folders the given processes log into (from their stdout)."""
    found = set()
    for pid in pids:
        try:
            target = Path(os.readlink(f"/proc/{pid}/fd/1"))
        except OSError:
            continue
        if target.parent.name.startswith("agentstream-dev-"):
            found.add(target.parent)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
    except OSError:
        return "?"


def test_dev_ctrl_c_during_startup_stops_everything(tmp_path: Path) -> None:
    """Ctrl-C while dev still waits for processor and worker must not orphan them (nor the broker)."""
    workdirs: set[Path] = set()
    try:
        with dev_process(tmp_path, *APP_ARGS) as dev:
            # Broker, processor and worker exist as soon as dev has spawned them, before they are ready.
            wait_for(lambda: len(descendants(dev.process.pid)) >= 3 or dev.process.poll() is not None, 60,
                     "dev spawning broker, processor and worker", interval=0.01)
            assert dev.process.poll() is None, dev.transcript()
            workdirs = _dev_workdirs(descendants(dev.process.pid))
            code = interrupt_and_wait(dev)
            dev.drain(5)
            transcript = dev.transcript()
            assert "Traceback" not in transcript, transcript
            deadline = time.monotonic() + 10
            while (leftover := [pid for pid in dev.children if alive(pid)]) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not leftover, (
                f"Ctrl-C during startup (dev exit code {code}) left these processes running: "
                f"{[_cmdline(pid) for pid in leftover]}\n{transcript}"
            )
    finally:
        for folder in workdirs:  # dev leaves its work folder behind when it does not stop cleanly
            shutil.rmtree(folder, ignore_errors=True)


def test_dev_honours_broker_and_http_ports(tmp_path: Path) -> None:
    broker_port, http_port, worker_port = free_ports(3)
    with dev_process(tmp_path, *APP_ARGS, "--broker-port", str(broker_port), "--http-port", str(http_port),
                     "--worker-http-port", str(worker_port)) as dev:
        addresses = read_addresses(dev)
        dev.children = descendants(dev.process.pid)
        assert addresses["bootstrap"][1] == broker_port
        assert addresses["api"][1] == http_port
        assert addresses["worker"][1] == worker_port
        dev.read_until(rf"export AGENTSTREAM_KAFKA_BOOTSTRAP=127\.0\.0\.1:{broker_port}\s+"
                       rf"AGENTSTREAM_API_URL=http://127\.0\.0\.1:{http_port}\s*$", 10)
        assert get_json(f"http://127.0.0.1:{http_port}/agent-types")[0] == 200
        assert accepts_connections(broker_port)
        code = interrupt_and_wait(dev, sig=signal.SIGTERM)  # as `kill` or a container runtime stops it
        assert code == 0, dev.transcript()
        for port in (broker_port, http_port, worker_port):
            wait_for(lambda: not accepts_connections(port), 10, f"port {port} closed after dev stopped")
        leftover = [pid for pid in dev.children if alive(pid)]
        assert not leftover, f"processes left running after SIGTERM: {[_cmdline(pid) for pid in leftover]}"


def test_dev_with_a_missing_app_fails_cleanly(tmp_path: Path) -> None:
    with dev_process(tmp_path, "--app", "no_such_app_module", "--app-dir", APPS) as dev:
        try:
            code = dev.process.wait(90)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"dev kept running with a missing --app:\n{dev.transcript()}") from None
        dev.drain(10)
        transcript = dev.transcript()
    kept = re.search(r"logs kept in (\S+?)\)", transcript)
    if kept and Path(kept.group(1)).name.startswith("agentstream-dev-"):
        shutil.rmtree(kept.group(1), ignore_errors=True)  # the logs dev keeps after a failed start
    assert code != 0, transcript
    assert "no_such_app_module" in transcript, transcript
    assert "Traceback" not in transcript, transcript


def test_demo_prints_the_agent_state_and_exits(tmp_path: Path) -> None:
    result = run_cli("demo", env=cli_env(), timeout=120, what="demo", cwd=tmp_path)
    stdout = result.stdout
    assert result.returncode == 0, f"demo failed ({result.returncode}):\n{result.output}"
    state = json_object_in(stdout)
    assert state["agent_id"] == "demo-taskprocessor", state
    assert len(state["events"]) == 4, state["events"]
    assert [e["name"] for e in state["events"]] == ["configure", "add_task", "add_task", "shutdown"]
    assert re.search(r"^metrics: http://\S+:\d+/metrics$", stdout, re.M), stdout
    assert "Traceback" not in result.output
