"""What every measurement shares: the broker, private topic slices, spawned components.

Each measurement gets its own topic prefix and consumer group (a `Slice`), so one
measurement's leftovers never count in another's numbers, and every process spawned
through the `Bench` is killed when the run ends, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from agentstream.agents import AgentClient
from agentstream.streams.broker import BrokerProfile
from agentstream.streams.devstack import ManagedProcess, component
from agentstream.streams.kafka import ensure_topics
from agentstream.streams.settings import Settings
from agentstream.topics import TopicNames

BENCH_DIR = Path(__file__).resolve().parent
APP = "agents"  # bench/agents.py, loaded with --app-dir bench
PARTITIONS = 4


@dataclass
class Row:
    """One line of the printed table."""

    measurement: str
    value: str
    unit: str
    notes: str = ""


@dataclass
class Slice:
    """One measurement's private topics (own prefix) and processor consumer group."""

    bench: "Bench"
    prefix: str
    app_id: str

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.prefix)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AGENTSTREAM_TOPIC_PREFIX": self.prefix,
            "AGENTSTREAM_APP_ID": self.app_id,
            # BENCH_LOG_LEVEL=INFO (with --keep-logs) keeps the components' timelines (W3's log at INFO anyway)
            "AGENTSTREAM_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }

    def processor(
        self, name: str = "processor", data_dir: Path | None = None, *, app: str = APP,
        env: dict[str, str] | None = None, http_port: int | None = None,
    ) -> ManagedProcess:
        """A started processor on this slice; `data_dir` (and `http_port`) let a restart find its RocksDB state
        (and keep its address)."""
        state = str(data_dir or self.bench.workdir / f"{self.prefix}{name}-state")
        return self.bench.spawn("processor", name=f"{self.prefix}{name}", app=app, http_port=http_port,
                                env={**self.env, **(env or {}), "AGENTSTREAM_DATA_DIR": state})

    def worker(self, name: str = "worker", *, app: str = APP, env: dict[str, str] | None = None) -> ManagedProcess:
        return self.bench.spawn("worker", name=f"{self.prefix}{name}", app=app, env={**self.env, **(env or {})})

    def client(self, api_url: str) -> AgentClient:
        return AgentClient(Settings(kafka_bootstrap=self.bench.bootstrap, topic_prefix=self.prefix, api_url=api_url))

    async def produce(self, records: Iterable[tuple[bytes, bytes]]) -> float:
        """Send all records to agent-events as fast as the producer allows; returns seconds until flushed."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bench.bootstrap, **self.bench.profile.producer_options())
        await producer.start()
        try:
            started = time.perf_counter()
            for key, value in records:
                await producer.send(self.names.agent_events, key=key, value=value)
            await producer.flush()
            return time.perf_counter() - started
        finally:
            await producer.stop()


@dataclass
class Bench:
    """One benchmark run: the broker, its profile, a work folder, and every process spawned."""

    bootstrap: str
    profile: BrokerProfile
    workdir: Path
    quick: bool
    memory_agents: int | None = None  # idle agents of the memory row (None: the size's default)
    processes: list[ManagedProcess] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)  # for ratios between measurements
    failed: bool = False

    async def slice(self, label: str) -> Slice:
        suffix = uuid.uuid4().hex[:6]
        created = Slice(self, f"bench-{label}-{suffix}.", f"bench-{label}-{suffix}")
        await ensure_topics(self.bootstrap, created.names.specs(PARTITIONS, task_queues=("restack",)))
        return created

    def spawn(self, command: str, *, name: str, env: dict[str, str], app: str = APP,
              http_port: int | None = None) -> ManagedProcess:
        """Start `agentstream <command>` with module `app` from bench/ (default: bench/agents.py)."""
        process = component(command, self.bootstrap, app, log_dir=self.workdir, app_dir=BENCH_DIR, env=env, name=name,
                            http_port=http_port)
        self.track(process)
        return process.start()

    def track(self, process: ManagedProcess) -> None:
        self.processes.append(process)

    async def ready(self, *processes: ManagedProcess, timeout: float = 90.0) -> None:
        await asyncio.gather(*(asyncio.to_thread(p.wait_ready, timeout) for p in processes))

    def kill_all(self) -> None:
        for process in self.processes:
            process.kill()
        self.processes.clear()


def fetch(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(HTTP status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of metric `name` at `url`/metrics whose labels include `labels`; 0 if none."""
    _, body = fetch(f"{url}/metrics")
    total = 0.0
    for line in body.decode(errors="replace").splitlines():
        sample, _, value = line.rpartition(" ")
        sample_name, _, label_text = sample.partition("{")
        if sample_name != name or line.startswith("#"):
            continue
        found = dict(part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            total += float(value)
    return total


def agent_state(url: str, agent_id: str) -> dict[str, Any] | None:
    status, body = fetch(f"{url}/agents/{agent_id}")
    return json.loads(body) if status == 200 else None


async def wait_until(check: Callable[[], Any], what: str, timeout: float = 120.0, interval: float = 0.05) -> Any:
    """Call the blocking `check` (off the loop) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what}: not reached within {timeout}s (last: {last!r})")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation): honest for small samples."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def cpu_seconds(process: ManagedProcess) -> float | None:
    """CPU time (user + system) `process` has used so far; None where there is no /proc."""
    if process.process is None:
        return None
    try:
        stat = Path(f"/proc/{process.process.pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by a processor and by this process (the benchmark's clients) during a measurement.

    What one input costs the processor, and by the processor's share of one core, whether
    it is what binds the workload. On a VM it drifts between runs with the machine's speed,
    about as much as the rates do (3.9-4.6 ms per W1 event for the same code, one sitting).
    """

    def __init__(self, processor: ManagedProcess) -> None:
        self._processor = processor
        self._started = (cpu_seconds(processor), time.process_time(), time.perf_counter())

    def row(self, name: str, inputs: int, unit: str) -> Row:
        """`name`: the processor's CPU ms per input, and in the notes its share of the wall time and the clients'."""
        processor, client, wall = cpu_seconds(self._processor), time.process_time(), time.perf_counter()
        processor0, client0, wall0 = self._started
        clients = f"the benchmark's clients {1000 * (client - client0) / inputs:.2f} ms per {unit}"
        if processor is None or processor0 is None:
            return Row(name, "n/a", f"ms/{unit}", f"no /proc here; {clients}")
        used = processor - processor0
        return Row(name, f"{1000 * used / inputs:.2f}", f"ms/{unit}",
                   f"{used:.1f} s CPU in {wall - wall0:.1f} s wall ({100 * used / (wall - wall0):.0f}% of one core); "
                   f"{clients}")

