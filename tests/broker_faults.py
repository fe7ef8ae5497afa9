"""Helpers of the broker-fault tests (tests/integration/test_broker_faults.py).

The workload is the chaos harness's (bench/chaos_agents.py through `agentstream
processor` / `agentstream worker` subprocesses, scheduled and compared with
bench/chaos.py and bench/chaos_verdict.py, imported from bench/): agents with slow
steps, durable timers, children, an event loop and event handlers awaiting steps.
Each test runs it on its own Apache Kafka cluster while the broker itself is hurt (or
the processors are scaled) and compares every agent, as the chaos verdict does, with a
calm run of the same workload (made once per session: end states depend on the inputs
only).

What was in flight at a kill is read just before it, from the broker (end offsets and
the groups' committed offsets) and from the components' /metrics, so a test can say
how much its kill could have lost or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agentstream.agents import AgentClient
from agentstream.streams.broker import BrokerProfile, detect_profile
from agentstream.streams.broker.apache import ApacheKafkaCluster, broker_jars
from agentstream.streams.broker.embedded import BrokerStartError
from agentstream.streams.devstack import ManagedProcess
from agentstream.streams.kafka import ensure_topics
from agentstream.streams.settings import Settings

BENCH = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))  # appended: bench/agents.py must not shadow anything

import chaos  # noqa: E402
from chaos import APP, Spec, all_ids, workload  # noqa: E402,F401  (re-exported for the tests)
from chaos_agents import expected_result  # noqa: E402
from chaos_verdict import Settled, comparable, diff, duplicates, settle  # noqa: E402
from harness import PARTITIONS, Bench, Slice, metric  # noqa: E402

BROKER_SETTING = "AGENTSTREAM_TEST_BROKER"
LOGS = {"AGENTSTREAM_LOG_LEVEL": "INFO"}
READY_S = 120.0
SETTLE_S = 90.0


def apache_or_skip() -> None:
    """Skip unless this is the Apache Kafka pass of the suite and a broker can be started here."""
    kind = os.environ.get(BROKER_SETTING, "embedded")
    if kind != "apache":
        pytest.skip(f"faults of the broker itself need Apache Kafka: run with {BROKER_SETTING}=apache (now {kind!r})")
    if shutil.which("java") is None:
        pytest.skip("Apache Kafka needs `java` on PATH (Debian: apt-get install openjdk-17-jre-headless)")
    try:
        broker_jars()
    except BrokerStartError as exc:
        if shutil.which("mvn") is None:
            pytest.skip(f"the broker's jars are not resolved and `mvn` is missing: {exc}")
        raise


@contextlib.contextmanager
def apache_cluster(folder: Path, nodes: int) -> Iterator[ApacheKafkaCluster]:
    """This test's own cluster, killed whatever happens (its data goes with the tmp folder; a clean
    shutdown of a cluster missing a node takes half a minute)."""
    cluster = ApacheKafkaCluster(folder, nodes)
    try:
        yield cluster.start()
    finally:
        for node in cluster.nodes:
            node.kill()


# ---------------------------------------------------------------------------------------------- the calm run


_CALM: dict[str, Settled] = {}  # workload -> its calm end states (they depend on the inputs only)


async def calm_reference(bootstrap: str, profile: BrokerProfile, workdir: Path, specs: list[Spec]) -> Settled:
    """The workload without faults (bench/chaos.py's calm run): every agent's end state, checked.

    End states depend on the inputs alone (the chaos harness's premise, and the calm
    results are checked against `expected_result`), so a workload's calm run is made
    once per session, on the cluster of the first test that needs it.
    """
    key = repr(specs)
    if key in _CALM:
        return _CALM[key]
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(bootstrap, profile, workdir, quick=False)
    try:
        calm = await chaos.calm_run(bench, specs, SETTLE_S, print)
    finally:
        bench.kill_all()
    assert not calm.unsettled, f"the calm run did not end: {calm.unsettled}"
    wrong = {s.agent_id: calm.views[s.agent_id].get("result") for s in specs
             if calm.views[s.agent_id].get("result") != expected_result(s.plan)}
    assert not wrong, f"calm results not as expected: {wrong}"
    _CALM[key] = calm
    return calm


def differences(specs: list[Spec], calm: Settled, faulted: Settled) -> dict[str, Any]:
    """Everything in which the faulted run differs from the calm one (empty: every agent as calm)."""
    found: dict[str, Any] = {}
    if faulted.unsettled:
        found["not ended"] = {a: {k: v for k, v in s.items() if k != "view"} for a, s in faulted.unsettled.items()}
    differing = {a: lines for a in all_ids(specs) if a in faulted.views
                 and (lines := diff(comparable(calm.views[a]), comparable(faulted.views[a])))}
    if differing:
        found["differing"] = differing
    doubles = {a: notes for a, view in faulted.views.items() if (notes := duplicates(view))}
    if doubles:
        found["applied twice"] = doubles
    missing = {}
    for spec in specs:
        view = faulted.views.get(spec.agent_id)
        if view is not None:
            applied = {(e.get("name"), e.get("payload")) for e in view.get("events") or []}
            if lost := [list(e) for e in spec.events if e not in applied]:
                missing[spec.agent_id] = lost
    if missing:
        found["sent but never applied"] = missing
    return found


# ---------------------------------------------------------------------------------------------- the stack


@dataclass
class InFlight:
    """What was under way at one kill, read just before it."""

    kill: str
    inputs_not_yet_applied: int  # on agent-events + step-results, not yet handled by a processor
    inputs_uncommitted: int  # past the processors' committed offsets: handed out again after the kill
    commands_uncommitted: int  # step commands past the worker's committed offsets
    steps_running: int
    timers_pending: int
    agents_running: int

    @property
    def total(self) -> int:
        return self.inputs_uncommitted + self.commands_uncommitted + self.steps_running + self.timers_pending

    def line(self) -> str:
        return (f"{self.kill}: {self.inputs_not_yet_applied} inputs not yet applied, {self.inputs_uncommitted} "
                f"inputs past the processors' committed offsets, {self.commands_uncommitted} step commands past "
                f"the worker's, {self.steps_running} steps running, {self.timers_pending} timers pending, "
                f"{self.agents_running} agents running")


@dataclass
class Stack:
    """Processors and one worker on a private slice of the cluster; never restarted by the test."""

    bootstrap: str
    profile: BrokerProfile
    workdir: Path
    replication: int = 1
    min_insync: int | None = None
    processors: list[ManagedProcess] = field(default_factory=list)
    worker: ManagedProcess | None = None
    space: Slice | None = None
    bench: Bench | None = None

    @property
    def env(self) -> dict[str, str]:
        """The topics' settings reach the processors too: they create the changelog."""
        insync = {} if self.min_insync is None else {"AGENTSTREAM_MIN_INSYNC_REPLICAS": str(self.min_insync)}
        return {**LOGS, "AGENTSTREAM_REPLICATION_FACTOR": str(self.replication), **insync}

    async def start(self, processors: int = 1) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bench = Bench(self.bootstrap, self.profile, self.workdir, quick=False)
        label = f"faults-{os.urandom(3).hex()}"
        self.space = Slice(self.bench, f"bench-{label}.", f"bench-{label}")
        settings = Settings(kafka_bootstrap=self.bootstrap, topic_prefix=self.space.prefix, partitions=PARTITIONS,
                            replication_factor=self.replication, min_insync_replicas=self.min_insync)
        await ensure_topics(self.bootstrap, settings.topic_specs(task_queues=("restack",)))
        for _ in range(processors):
            self.add_processor()
        self.worker = self.space.worker("worker", app=APP, env=self.env)
        await self.ready()
        return self

    def add_processor(self) -> ManagedProcess:
        assert self.space is not None
        name = f"processor-{len(self.processors)}"
        process = self.space.processor(name, app=APP, env=self.env)
        self.processors.append(process)
        return process

    async def ready(self, timeout: float = READY_S) -> None:
        """Until every component answers /ready (a processor: assigned and restored)."""
        await asyncio.gather(*(asyncio.to_thread(p.wait_ready, timeout) for p in self.components))

    @property
    def components(self) -> list[ManagedProcess]:
        return [*self.processors, *([self.worker] if self.worker else [])]

    def exited(self) -> dict[str, int]:
        """Components that exited (a test that needs no restart asserts this stays empty)."""
        return {p.name: code for p in self.components if p.process is not None
                and (code := p.process.poll()) is not None}

    def stop_processor(self, process: ManagedProcess) -> None:
        """Scale down: a clean shutdown (SIGTERM), as an orchestrator does; it leaves the group."""
        process.stop(timeout=30.0)
        self.processors.remove(process)

    def url(self) -> str:
        return self.processors[0].url

    def client(self) -> AgentClient:
        assert self.space is not None
        return self.space.client(self.url())

    async def send(self, client: AgentClient, events: list[tuple[Spec, list[tuple[str, int]]]]) -> None:
        for spec, batch in events:
            await chaos.send_events(client, spec, batch)

    async def schedule(self, client: AgentClient, specs: list[Spec]) -> None:
        for spec in specs:
            await chaos.schedule(client, spec, spec.chaos_pause_ms)

    def _metric(self, processes: list[ManagedProcess], name: str, **labels: str) -> int:
        return int(sum(metric(p.url, name, **labels) for p in processes))

    async def offsets(self) -> dict[str, int]:
        """From the broker: records on the inputs and the step commands, and how far the groups committed."""
        assert self.space is not None
        names = self.space.names
        inputs = [names.agent_events, names.step_results]
        commands = [names.step_commands("restack")]
        ends, processed, worked = await asyncio.gather(
            end_offsets(self.bootstrap, [*inputs, *commands]),
            committed(self.bootstrap, self.space.app_id),
            committed(self.bootstrap, f"{self.space.app_id}-worker-restack"),
        )
        return {
            "produced": sum(n for tp, n in ends.items() if tp.topic in inputs),
            "inputs_uncommitted": sum(n - processed.get(tp, 0) for tp, n in ends.items() if tp.topic in inputs),
            "commands_uncommitted": sum(n - worked.get(tp, 0) for tp, n in ends.items() if tp.topic in commands),
        }

    def gauges(self) -> dict[str, int]:
        """From the components' /metrics: what runs right now."""
        assert self.worker is not None
        handled = self._metric(self.processors, "agentstream_inputs_total")
        redelivered = self._metric(self.processors, "agentstream_inputs_total", outcome="duplicate")
        return {
            "handled": handled - redelivered,
            "steps_running": self._metric([self.worker], "agentstream_worker_steps_in_flight"),
            "timers_pending": self._metric(self.processors, "agentstream_pending_timers"),
            "agents_running": self._metric(self.processors, "agentstream_agents", status="running"),
        }

    async def at_kill(self, kill: str, timeout: float = 60.0) -> InFlight:
        """Wait for a moment with a step running and a timer pending; what a kill right then interrupts.

        The broker's offsets are read first (a killed single broker cannot answer after),
        then the components' gauges until that moment comes: the caller kills at once.
        """
        broker = await self.offsets()
        deadline = time.monotonic() + timeout
        while True:
            now = await asyncio.to_thread(self.gauges)
            if now["steps_running"] and now["timers_pending"]:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{kill}: no step running with a timer pending within {timeout}s: {now}")
            await asyncio.sleep(0.02)
        return InFlight(
            kill=kill,
            inputs_not_yet_applied=max(0, broker["produced"] - now["handled"]),
            inputs_uncommitted=broker["inputs_uncommitted"],
            commands_uncommitted=broker["commands_uncommitted"],
            steps_running=now["steps_running"],
            timers_pending=now["timers_pending"],
            agents_running=now["agents_running"],
        )

    def owned(self) -> dict[str, int]:
        """Partitions of agent-events each processor owns now."""
        return {p.name: int(metric(p.url, "agentstream_assigned_partitions")) for p in self.processors}

    async def dead_letters(self) -> int:
        assert self.space is not None
        return sum((await end_offsets(self.bootstrap, [self.space.names.dead_letters])).values())

    async def settle(self, specs: list[Spec]) -> Settled:
        return await settle(self.url, all_ids(specs), SETTLE_S, print)

    def kill_all(self) -> None:
        if self.bench is not None:
            self.bench.kill_all()


# ---------------------------------------------------------------------------------------------- the broker


@contextlib.asynccontextmanager
async def admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    async with admin(bootstrap) as client:
        offsets = await client.list_consumer_group_offsets(group)
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def out_of_sync(bootstrap: str, node_id: int) -> list[str]:
    """`topic:partition` of every partition whose in-sync replicas lack `node_id` (empty: it caught up)."""
    async with admin(bootstrap) as client:
        described = await client.describe_topics()
    lagging = []
    for topic in described:
        for partition in topic["partitions"]:
            if node_id in partition["replicas"] and node_id not in partition["isr"]:
                lagging.append(f"{topic['topic']}:{partition['partition']}")
    return lagging


async def wait_in_sync(bootstrap: str, node_id: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    lagging: list[str] = []
    while time.monotonic() < deadline:
        try:
            lagging = await out_of_sync(bootstrap, node_id)
        except Exception as exc:  # noqa: BLE001 - a node still starting may answer with errors: ask again
            lagging = [repr(exc)]
        if not lagging:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"broker {node_id} not back in the ISR of every partition within {timeout}s: {lagging[:10]}")


async def coordinator(bootstrap: str, group: str) -> int:
    """The broker that coordinates `group` (killing it moves the group's coordinator)."""
    async with admin(bootstrap) as client:
        return int(await client.find_coordinator(group))


async def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    """partition -> the broker that leads it."""
    async with admin(bootstrap) as client:
        described = await client.describe_topics([topic])
    return {p["partition"]: p["leader"] for t in described for p in t["partitions"]}


async def replication(bootstrap: str, topics: list[str]) -> dict[str, tuple[int, str]]:
    """topic -> (fewest replicas of any of its partitions, its effective min.insync.replicas)."""
    async with admin(bootstrap) as client:
        described = await client.describe_topics(topics)
        responses = await client.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t, {"min.insync.replicas": None}) for t in topics])
    replicas = {t["topic"]: min(len(p["replicas"]) for p in t["partitions"]) for t in described}
    isr = {resource[3]: str(entry[1]) for response in responses for resource in response.resources
           for entry in resource[4] if entry[0] == "min.insync.replicas"}
    return {t: (replicas.get(t, 0), isr.get(t, "?")) for t in topics}


class Phases(dict[str, float]):
    """How long each phase of a test took, printed as it ends (a slow or hung phase shows at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.mark = time.monotonic()

    def done(self, name: str, since: float | None = None) -> None:
        now = time.monotonic()
        self[name] = now - (self.mark if since is None else since)
        if since is None:
            self.mark = now
        print(f"  {name}: {self[name]:.1f}s", flush=True)


def report(kills: list[InFlight], seconds: dict[str, float]) -> str:
    """The lines a test prints (and puts into its assertion messages)."""
    lines = [f"in flight at {k.line()}" for k in kills]
    lines.append("phases: " + ", ".join(f"{name} {s:.1f}s" for name, s in seconds.items()))
    return "\n".join(lines)


__all__ = ["APP", "PARTITIONS", "InFlight", "Phases", "Settled", "Spec", "Stack", "all_ids", "apache_cluster",
           "apache_or_skip", "calm_reference", "coordinator", "detect_profile", "differences", "leaders", "replication",
           "report", "wait_in_sync", "workload"]
