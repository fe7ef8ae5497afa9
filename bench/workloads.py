"""The side-by-side workloads of the speed issue: W1, W2a, W2b, W3 and the memory row.

Defined as in the issue and the peer harness (../shared/peers, bench/common.py there),
with the same sizes, so agentstream's figures sit beside Restate's and DBOS's from the
same sitting. Unlike the other measurements of bench/, these go only through what a
user has: `AgentClient` (schedule_agent, send_agent_event, get_agent_result,
get_agent_state over the processor's HTTP API) against real `agentstream processor`
and `agentstream worker` processes with default settings. The one exception is W2a's
push-based wait, which reads the public agent-updates topic (see `UpdateWatcher`).
The agent types are in bench/workload_agents.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from agentstream.agents import AgentClient, AgentNotFoundError
from agentstream.streams.broker.embedded import free_port
from agentstream.streams.devstack import ManagedProcess
from agentstream.streams.engine import EngineConfig
from agentstream.topics import AgentStatus, AgentUpdate

from harness import Bench, CpuMeter, Row, Slice, median, metric, percentile, wait_until
from workload_agents import LAST_N, MARK_ENV, STALL_ENV, STEPS

APP = "workload_agents"  # bench/workload_agents.py
SENDERS = 32  # concurrent send_agent_event / schedule_agent callers (W1, W3 fill, memory)
POLLERS = 32  # concurrent state readers (W1)
POLL_PAUSE_S = 0.01  # pause between two polling sweeps (W1)
W2B_IN_FLIGHT = 32
TARGET_AGENTS = 100_000  # the memory target is stated for this many idle agents


@dataclass(frozen=True)
class Sizes:
    """Workload sizes: the issue's (full) or a smoke run's (--quick)."""

    w1_agents: int
    w1_events: int
    w2a_runs: int
    w2b_runs: int
    w3_histories: tuple[int, ...]
    w3_trials: int
    memory_agents: int
    warmup: int  # invocations before W2a/W2b's clock starts (first turns pay one-off costs)


# Memory: 100,000 schedules take about 10 min, so the full run holds 10,000 and says how that
# differs from the target's 100,000 (idle_memory); `--memory-agents 100000` measures the target.
FULL = Sizes(100, 50, 200, 2_000, (100, 2_000), 3, 10_000, 10)
QUICK = Sizes(20, 10, 20, 100, (20,), 1, 500, 3)


def sizes(bench: Bench) -> Sizes:
    return QUICK if bench.quick else FULL


async def started(bench: Bench, label: str) -> tuple[Slice, ManagedProcess]:
    """A fresh slice with one processor and one worker running the workload agents, both ready."""
    space = await bench.slice(label)
    processor, worker = space.processor(app=APP), space.worker(app=APP)
    await bench.ready(processor, worker)
    return space, processor


async def run_pool(n: int, concurrency: int, one: Callable[[int], Awaitable[object]]) -> float:
    """one(0) .. one(n-1), `concurrency` at a time, each caller taking the next index; returns seconds."""
    next_index = 0

    async def caller() -> None:
        nonlocal next_index
        while next_index < n:
            i, next_index = next_index, next_index + 1
            await one(i)

    started_at = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, n)):
            group.create_task(caller())
    return time.perf_counter() - started_at


async def poll_counts(
    client: AgentClient, targets: dict[str, int], *, timeout: float, pollers: int = POLLERS, pause: float = POLL_PAUSE_S
) -> dict[str, dict[str, Any]]:
    """Sweep get_agent_state over the agents not yet at their target `count`, until all are; their fields.

    A sweep reads every pending agent, `pollers` requests at a time, then pauses; an
    agent not found yet (schedule not applied) counts as short of its target.
    """
    pending = dict(targets)
    final: dict[str, dict[str, Any]] = {}
    gate = asyncio.Semaphore(pollers)
    deadline = time.monotonic() + timeout

    async def probe(agent_id: str) -> None:
        async with gate:
            try:
                state = await client.get_agent_state(agent_id)
            except AgentNotFoundError:
                return
        fields: dict[str, Any] = state.get("fields") or {}
        if int(fields.get("count", -1)) >= pending[agent_id]:
            final[agent_id] = fields
            del pending[agent_id]

    while pending:
        if time.monotonic() > deadline:
            short = next(iter(pending))
            raise TimeoutError(f"{len(pending)} agents short of their count after {timeout:.0f}s, e.g. {short}")
        await asyncio.gather(*(probe(agent_id) for agent_id in list(pending)))
        if pending:
            await asyncio.sleep(pause)
    return final


class UpdateWatcher:
    """Push-based wait: results from the agent-updates topic as the processor publishes them.

    One consumer for the whole run, positioned at the topic's end before the first
    schedule; `expect(agent_id)` must be called before the schedule is sent. The client's
    own push API, `AgentClient.agent_updates(agent_id)`, opens a consumer per agent,
    whose start would dominate a ~50 ms invocation.
    """

    def __init__(self, bench: Bench, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bench.bootstrap, group_id=None, auto_offset_reset="latest",
            **bench.profile.consumer_options(),
        )
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "UpdateWatcher":
        await self._consumer.start()
        await self._consumer.getmany(timeout_ms=500)  # joins the topic's end before the first schedule
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._consumer.stop()

    def expect(self, agent_id: str) -> asyncio.Future[Any]:
        """A future of the agent's result; fails if it fails or is cancelled."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[agent_id] = future
        return future

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            for record in (r for batch in batches.values() for r in batch):
                update = AgentUpdate.model_validate_json(record.value)
                future = self._waiting.get(update.agent_id)
                if future is None or future.done() or update.status is AgentStatus.RUNNING:
                    continue
                del self._waiting[update.agent_id]
                if update.status is AgentStatus.COMPLETED:
                    future.set_result(update.result)
                else:
                    future.set_exception(RuntimeError(f"{update.agent_id}: {update.status.value} {update.error}"))


def latency_notes(samples: list[float]) -> str:
    return f"p95 {percentile(samples, 95):.0f} ms, p99 {percentile(samples, 99):.0f} ms, max {max(samples):.0f} ms"


def check_steps(agent_id: str, result: Any) -> None:
    if not isinstance(result, dict) or len(result.get("steps", [])) != STEPS:
        raise AssertionError(f"{agent_id} returned {result!r}, not {STEPS} step outputs")


async def invoke(client: AgentClient, agent_id: str, agent_type: str = "ThreeSteps") -> float:
    """One W2 invocation the way a user writes it: schedule_agent, then get_agent_result; ms."""
    started_at = time.perf_counter()
    await client.schedule_agent(agent_type, agent_id)
    check_steps(agent_id, await client.get_agent_result(agent_id, timeout=120))
    return (time.perf_counter() - started_at) * 1000


async def w1_keyed_events(bench: Bench) -> list[Row]:
    """W1: K agents x E events by 32 senders, until 32 HTTP pollers see every agent at E."""
    size = sizes(bench)
    k, e = size.w1_agents, size.w1_events
    space, processor = await started(bench, "w1")
    ids = [f"w1-{i:03d}" for i in range(k)]
    async with space.client(processor.url) as client:
        await run_pool(k, SENDERS, lambda i: client.schedule_agent("Keyed", ids[i]))
        await poll_counts(client, dict.fromkeys(ids, 0), timeout=120)  # every agent exists before the clock

        async def send(j: int) -> None:  # round-robin over agents; payload = the agent's sequence number
            await client.send_agent_event(ids[j % k], "add", {"payload": j // k})

        started_at, cpu = time.perf_counter(), CpuMeter(processor)
        async with asyncio.TaskGroup() as group:  # pollers poll from the first send, as users' readers would
            sending = group.create_task(run_pool(k * e, SENDERS, send))
            polling = group.create_task(poll_counts(client, dict.fromkeys(ids, e), timeout=max(120, k * e / 5)))
        wall = time.perf_counter() - started_at
        cpu_row = cpu.row("W1 processor CPU per event", k * e, "event")
        final = polling.result()
    keep = min(e, LAST_N)
    wrong = {a: f for a, f in final.items() if f.get("count") != e or sorted(f.get("last", [])) != list(range(e - keep, e))}
    if wrong:
        agent_id, fields = next(iter(wrong.items()))
        raise AssertionError(f"W1 state wrong for {len(wrong)} agents, e.g. {agent_id}: {fields}")
    rate = k * e / wall
    bench.rates["w1"] = rate
    notes = (f"{k} agents x {e} events, send_agent_event by {SENDERS} senders round-robin; {POLLERS} pollers "
             f"(get_agent_state, {POLL_PAUSE_S * 1000:.0f} ms between sweeps) from the first send; sends done at "
             f"{sending.result():.1f}s, all seen at {wall:.1f}s; state exact (count {e}, last {keep} payloads)")
    return [Row("W1 keyed events/s", f"{rate:,.1f}", "events/s", notes), cpu_row]


# W2's agent types: steps on a worker (what W2 always measured), and the same steps run by the
# processor within the turn (`local=True`), the way the peers run theirs (Restate's ctx.run, DBOS steps).
W2_KINDS = {"worker": ("ThreeSteps", "", "worker steps"), "local": ("ThreeLocalSteps", " (local steps)", "local steps")}


async def w2a_latency(bench: Bench, kind: str = "worker") -> list[Row]:
    """W2a: sequential 3-step invocations, waited for with get_agent_result, then with a push-based wait."""
    agent_type, label, what = W2_KINDS[kind]
    size = sizes(bench)
    n = size.w2a_runs
    space, processor = await started(bench, "w2a" if kind == "worker" else f"w2a-{kind}")
    polled: list[float] = []
    pushed: list[float] = []
    async with space.client(processor.url) as client, UpdateWatcher(bench, space.names.agent_updates) as updates:
        for i in range(size.warmup):
            await invoke(client, f"w2a-warmup-{i}", agent_type)
        for i in range(n):
            polled.append(await invoke(client, f"w2a-poll-{i}", agent_type))
        for i in range(n):
            agent_id = f"w2a-push-{i}"
            started_at = time.perf_counter()
            result = updates.expect(agent_id)
            await client.schedule_agent(agent_type, agent_id)
            check_steps(agent_id, await asyncio.wait_for(result, 120))
            pushed.append((time.perf_counter() - started_at) * 1000)
    how = f"{n} sequential invocations of a {STEPS}-step agent (no-op {what}), after {size.warmup} warm-up"
    poll_how = f"schedule_agent -> get_agent_result (the owning processor holds the request until the agent ends); {how}"
    push_how = f"schedule_agent -> 'completed' read from agent-updates (one consumer for the run); {how}"
    return [
        Row(f"W2a latency p50, get_agent_result{label}", f"{percentile(polled, 50):.1f}", "ms",
            f"{latency_notes(polled)}; {poll_how}"),
        Row(f"W2a latency p99, get_agent_result{label}", f"{percentile(polled, 99):.1f}", "ms", "nearest rank"),
        Row(f"W2a latency p50, push (agent-updates){label}", f"{percentile(pushed, 50):.1f}", "ms",
            f"{latency_notes(pushed)}; {push_how}"),
        Row(f"W2a latency p99, push (agent-updates){label}", f"{percentile(pushed, 99):.1f}", "ms", "nearest rank"),
    ]


async def w2b_throughput(bench: Bench, kind: str = "worker") -> list[Row]:
    """W2b: N invocations, 32 in flight, each schedule_agent -> get_agent_result."""
    agent_type, label, what = W2_KINDS[kind]
    size = sizes(bench)
    n = size.w2b_runs
    space, processor = await started(bench, "w2b" if kind == "worker" else f"w2b-{kind}")
    samples: list[float] = []
    async with space.client(processor.url) as client:
        for i in range(size.warmup):
            await invoke(client, f"w2b-warmup-{i}", agent_type)

        async def one(i: int) -> None:
            samples.append(await invoke(client, f"w2b-{i}", agent_type))

        cpu = CpuMeter(processor)
        wall = await run_pool(n, W2B_IN_FLIGHT, one)
        cpu_row = cpu.row(f"W2b processor CPU per invocation{label}", n, "invocation")
    rate = n / wall
    bench.rates["w2b" if kind == "worker" else f"w2b-{kind}"] = rate
    how = (f"{n} invocations of a {STEPS}-step agent ({what}), {W2B_IN_FLIGHT} in flight, each schedule_agent -> "
           f"get_agent_result; {wall:.1f}s")
    return [
        Row(f"W2b invocations/s, 32 in flight{label}", f"{rate:,.1f}", "inv/s", how),
        Row(f"W2b steps/s{label}", f"{rate * STEPS:,.1f}", "steps/s", f"{STEPS} steps per invocation"),
        Row(f"W2b latency p50{label}", f"{percentile(samples, 50):.0f}", "ms", "per invocation, under that load"),
        Row(f"W2b latency p99{label}", f"{percentile(samples, 99):.0f}", "ms", f"nearest rank; max {max(samples):.0f} ms"),
        cpu_row,
    ]


async def w2a_local_latency(bench: Bench) -> list[Row]:
    return await w2a_latency(bench, "local")


async def w2b_local_throughput(bench: Bench) -> list[Row]:
    return await w2b_throughput(bench, "local")


async def wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} not written within {timeout:.0f}s: no worker entered the stalling step")
        await asyncio.sleep(0.005)


@dataclass
class Trial:
    ready_ms: float  # SIGKILL -> restarted processor and worker both ready
    processed_ms: float  # SIGKILL -> the stalled event and the next one both applied


async def w3_recovery(bench: Bench) -> list[Row]:
    """W3: for each history H, kill processor and worker mid-step, restart both, time the next event."""
    size = sizes(bench)
    rows: list[Row] = []
    for history in size.w3_histories:
        fill_rate, trials = await w3_one(bench, history, size.w3_trials)
        processed = [t.processed_ms for t in trials]
        shown = " / ".join(f"{t:.0f}" for t in processed)
        notes = (f"median of {len(trials)} (trials {shown} ms); processor + worker SIGKILLed while the worker is "
                 f"inside a blocking step, released, one more event sent, both restarted (same RocksDB dir"
                 f"{'' if bench.profile.embedded else '; static group membership'}); "
                 f"until get_agent_state shows both events; both ready after {median([t.ready_ms for t in trials]):.0f} ms "
                 f"(median); history filled at {fill_rate:,.0f} events/s")
        rows.append(Row(f"W3 kill -> next event processed, H={history:,}", f"{median(processed):,.0f}", "ms", notes))
    return rows


async def w3_one(bench: Bench, history: int, trials: int) -> tuple[float, list[Trial]]:
    """One agent with `history` events, then `trials` kill/restart rounds; (fill events/s, trials)."""
    space = await bench.slice(f"w3-{history}")
    data_dir = bench.workdir / f"{space.prefix}state"  # kept across restarts, like a pod's volume
    stall, mark = bench.workdir / f"{space.prefix}stall", bench.workdir / f"{space.prefix}in-step"
    # Its components log at INFO whatever BENCH_LOG_LEVEL says: a restart logs a few lines, and a
    # failed trial (kept with the state on failure) then shows each component's timeline.
    env = {STALL_ENV: str(stall), MARK_ENV: str(mark), "AGENTSTREAM_LOG_LEVEL": "INFO"}
    # Static membership where the broker has it (Apache Kafka; the embedded broker ignores it), as the
    # StatefulSet manifest sets it: a restarted component gets its partitions back without a rebalance.
    static = not bench.profile.embedded
    processor_env = {**env, "AGENTSTREAM_INSTANCE_ID": "w3-processor"} if static else env
    worker_env = {**env, "AGENTSTREAM_INSTANCE_ID": "w3-worker"} if static else env
    port = free_port() if static else None  # a static member's address must survive its restarts
    processor = space.processor(data_dir=data_dir, app=APP, env=processor_env, http_port=port)
    worker = space.worker(app=APP, env=worker_env)
    await bench.ready(processor, worker)
    agent_id = "w3"
    results: list[Trial] = []
    async with space.client(processor.url) as client:  # sends go through Kafka: this client outlives the kills
        await client.schedule_agent("Keyed", agent_id)
        started_at = time.perf_counter()
        await run_pool(history, SENDERS, lambda j: client.send_agent_event(agent_id, "add", {"payload": j}))
        await poll_counts(client, {agent_id: history}, timeout=max(120, history / 5))
        fill_rate = history / (time.perf_counter() - started_at)
        expected = history
        for trial in range(trials):
            mark.unlink(missing_ok=True)
            stall.touch()
            await client.send_agent_event(agent_id, "add", {"payload": f"stall-{trial}", "stall": True})
            await wait_for_file(mark, 120)
            killed_at = time.perf_counter()
            processor.kill()
            worker.kill()
            stall.unlink()  # release: the step's retry returns at once
            await client.send_agent_event(agent_id, "add", {"payload": f"next-{trial}"})
            expected += 2
            processor = space.processor(f"processor-{trial}", data_dir=data_dir, app=APP, env=processor_env,
                                        http_port=port)
            worker = space.worker(f"worker-{trial}", app=APP, env=worker_env)
            await bench.ready(processor, worker)
            ready_at = time.perf_counter()
            async with space.client(processor.url) as reader:
                fields = (await poll_counts(reader, {agent_id: expected}, timeout=300, pollers=1, pause=0.002))[agent_id]
            done_at = time.perf_counter()
            if fields["count"] != expected or {f"stall-{trial}", f"next-{trial}"} - set(fields["last"]):
                raise AssertionError(f"after trial {trial}: count {fields['count']} (expected {expected}), last {fields['last']}")
            results.append(Trial((ready_at - killed_at) * 1000, (done_at - killed_at) * 1000))
    return fill_rate, results


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (VmRSS in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under `folder` (RocksDB SSTs, WAL, manifests)."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


async def idle_memory(bench: Bench) -> list[Row]:
    """One processor holds N idle agents: RSS before/after, per agent, and RocksDB bytes per agent."""
    n = bench.memory_agents or sizes(bench).memory_agents
    space = await bench.slice("memory")
    data_dir = bench.workdir / f"{space.prefix}state"
    processor = space.processor(data_dir=data_dir, app=APP)
    await bench.ready(processor)
    assert processor.process is not None
    pid = processor.process.pid
    ids = [f"idle-{i:06d}" for i in range(n)]
    async with space.client(processor.url) as client:
        await client.schedule_agent("Idle", "idle-warmup")  # the first turn loads code: not per-agent memory
        await wait_until(lambda: metric(processor.url, "agentstream_turns_total", kind="schedule") >= 1, "warm-up", 60)
        before, disk_before = rss_bytes(pid), folder_bytes(data_dir)
        started_at = time.perf_counter()
        sent = await run_pool(n, SENDERS, lambda i: client.schedule_agent("Idle", ids[i]))
        await wait_until(lambda: metric(processor.url, "agentstream_turns_total", kind="schedule") >= n + 1,
                         f"{n} schedules applied", timeout=max(120, n / 20), interval=0.5)
        applied_s = time.perf_counter() - started_at
        after = rss_bytes(pid)
        for agent_id in (ids[0], ids[-1]):
            status = (await client.get_agent_state(agent_id))["status"]
            if status != AgentStatus.RUNNING.value:
                raise AssertionError(f"{agent_id} is {status}, not an idle running agent")
    disk = folder_bytes(data_dir)
    per_agent = (after - before) / n
    per_disk = (disk - disk_before) / n  # without the files every RocksDB has (OPTIONS, MANIFEST, LOG)
    mb = 1_000_000
    # Below the target's size neither figure scales in a straight line: the engine keeps at most
    # `live` agents in memory (the rest only in RocksDB), and RocksDB's write-ahead log and unflushed
    # write buffers weigh more on few agents. Both rows say so rather than project the target.
    live = EngineConfig().cache_size
    rss_scale = disk_scale = ""
    if n < TARGET_AGENTS:
        measure = f"--memory-agents {TARGET_AGENTS} measures the target's {TARGET_AGENTS:,} agents"
        straight = f"a straight line to {TARGET_AGENTS:,} agents gives ~{(before + per_agent * TARGET_AGENTS) / mb:,.0f} MB"
        rss_scale = (f"; {straight}, an overstatement: at most {live:,} agents stay live in memory "
                     f"(EngineConfig.cache_size); {measure}" if n >= live else f"; {straight}; {measure}")
        disk_scale = f"; the WAL and write buffers weigh more on {n:,} agents than on {TARGET_AGENTS:,}; {measure}"
    return [
        Row(f"memory: processor RSS, {n:,} idle agents", f"{after / mb:,.0f}", "MB",
            f"from {before / mb:,.0f} MB after start (+{(after - before) / mb:,.0f} MB) (target <= 300 MB at "
            f"{TARGET_AGENTS:,} agents){rss_scale}"),
        Row("memory: RSS per idle agent", f"{per_agent / 1000:,.2f}", "kB",
            f"{n:,} agents scheduled by {SENDERS} schedule_agent callers (sent in {sent:.1f}s), all applied after "
            f"{applied_s:.1f}s: {n / applied_s:,.0f} schedules/s; run waits on a condition"),
        Row("memory: on disk per idle agent", f"{per_disk / 1000:,.2f}", "kB",
            f"growth of the processor's state dir (RocksDB: SSTs + WAL) from {disk_before / mb:,.1f} to "
            f"{disk / mb:,.1f} MB, / {n:,} (target <= 1 kB at {TARGET_AGENTS:,} agents){disk_scale}"),
    ]
