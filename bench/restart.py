"""A processor killed with SIGKILL, restarted on the same RocksDB folder, twice.

1. Killed right after a burst of events to one hot agent: what comes back is the work it
   had applied but not committed. The restarted processor re-reads it; each record must
   be skipped as a duplicate or applied again at most once (the agent's count must come
   out exact).
2. Killed once everything is committed: the first event of an agent with thousands of
   events must cost what it costs for a 10-event agent, since the processor rebuilds an
   agent from its compacted record, not from its history.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.producer import AIOKafkaProducer

from agentstream.streams.devstack import ManagedProcess
from agentstream.streams.kafka import admin_client, partitions_now, producer
from agentstream.topics import ScheduleAgent, SendEvent

from harness import Bench, Row, Slice, agent_state, metric, wait_until

INPUTS = "agentstream_inputs_total"
HANDLE = "agentstream_turn_duration_seconds"  # histogram of the processor's time per input


def count(url: str, agent_id: str) -> int:
    return int((agent_state(url, agent_id) or {}).get("fields", {}).get("count", -1))


@dataclass
class Timing:
    end_to_end_ms: float  # produce -> visible in GET /agents/{id}: dominated by Kafka hops
    handle_ms: float  # the processor's own time for the input(s) meanwhile: read, rebuild, apply, store

    def row(self, measurement: str, notes: str) -> Row:
        return Row(measurement, f"{self.handle_ms:.2f}", "ms", f"{notes}; end to end {self.end_to_end_ms:.0f} ms")


class Driver:
    """Sends events to one slice and times them until visible in the processor's API."""

    def __init__(self, space: Slice, kafka: AIOKafkaProducer) -> None:
        self.space, self.kafka = space, kafka

    async def send(self, *messages: ScheduleAgent | SendEvent) -> None:
        for m in messages:
            await self.kafka.send(self.space.names.agent_events, key=m.key, value=m.to_bytes())
        await self.kafka.flush()

    async def event_until(self, url: str, agent_id: str, expected: int, timeout: float = 120.0) -> Timing:
        """Produce one event to `agent_id` and wait until its count reads `expected`."""
        handled, handle_s = metric(url, HANDLE + "_count"), metric(url, HANDLE + "_sum")
        started = time.perf_counter()
        await self.send(SendEvent(agent_id=agent_id, event="add", payload=1))
        await wait_until(lambda: count(url, agent_id) >= expected, f"{agent_id} at {expected}", timeout, 0.005)
        end_to_end = (time.perf_counter() - started) * 1000
        got = count(url, agent_id)
        if got != expected:
            raise AssertionError(f"{agent_id}: count {got}, expected {expected}: an input was applied twice")
        await wait_until(lambda: metric(url, HANDLE + "_count") > handled, "turn observed", 10, 0.005)
        return Timing(end_to_end, (metric(url, HANDLE + "_sum") - handle_s) * 1000)


async def uncommitted(bench: Bench, group: str, topic: str) -> int:
    """Records of `topic` that consumer group `group` has not committed yet."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bench.bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_now(consumer, topic)]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    async with admin_client(bench.bootstrap) as admin:
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
    return sum(end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
               for tp, end in ends.items())


async def processor_restart(bench: Bench) -> list[Row]:
    many = 2_000 if bench.quick else 10_000
    space = await bench.slice("restart")
    data_dir = bench.workdir / f"{space.prefix}state"  # kept across restarts, like a pod's volume
    processor = space.processor(data_dir=data_dir)
    await bench.ready(processor)
    feeds = {"old": many, "young": 10, "warmup": 1}
    async with producer(bench.bootstrap, bench.profile) as kafka:
        drive = Driver(space, kafka)
        await drive.send(*(ScheduleAgent(agent_id=a, agent_type="BenchCounter") for a in feeds))
        events = [SendEvent(agent_id=a, event="add", payload=1) for a, n in feeds.items() for _ in range(n)]
        started = time.perf_counter()
        await drive.send(*events)
        await wait_until(lambda: metric(processor.url, "agentstream_turns_total", kind="event") >= len(events),
                         "events applied", timeout=300)
        hot_rate = len(events) / (time.perf_counter() - started)

        # 1. crash right after the burst
        backlog = await uncommitted(bench, space.app_id, space.names.agent_events)
        processor, ready_s = await restart(bench, space, processor, data_dir, "after-burst")
        # Inputs of one agent are applied in order: once this one shows, the redelivered ones are through.
        await drive.event_until(processor.url, "old", many + 1)
        caught_up_s = time.monotonic() - ready_s[1]
        duplicates = metric(processor.url, INPUTS, outcome="duplicate")
        reapplied = metric(processor.url, INPUTS, outcome="applied") - 1

        # 2. crash with everything committed: the next event of each agent rebuilds it
        await wait_committed(bench, space)
        processor, _ = await restart(bench, space, processor, data_dir, "committed")
        await drive.event_until(processor.url, "warmup", 2)  # the first turn after a start pays one-off costs
        old = await drive.event_until(processor.url, "old", many + 2)
        young = await drive.event_until(processor.url, "young", 11)
        warm = await drive.event_until(processor.url, "old", many + 3)
    size, changelog = await stored_size(bench, f"{space.app_id}-agents-changelog", b"old")
    how = "processor's handle() time for it (turn histogram), 1 sample"
    return [
        Row("events/s, one hot agent (processor)", f"{hot_rate:,.0f}", "events/s",
            f"{many:,} events to one agent; its {size / 1000:,.0f} kB record is rewritten every turn "
            f"({changelog:,} changelog records by the end)"),
        Row("SIGKILL after burst -> restarted ready", f"{ready_s[0]:.1f}", "s",
            f"same RocksDB dir; {backlog:,} inputs uncommitted at the kill"),
        Row("  -> caught up with redelivered inputs", f"{caught_up_s:.1f}", "s",
            f"{duplicates:,.0f} skipped as duplicates, {reapplied:,.0f} applied again; counts exact"),
        old.row(f"first event after restart, {many:,}-event agent", f"all committed before the kill; {how}"),
        young.row("first event after restart, 10-event agent", how),
        warm.row("  next event, cached live agent", "baseline: no rebuild"),
    ]


async def restart(
    bench: Bench, space: Slice, old: ManagedProcess, data_dir: Path, name: str
) -> tuple[ManagedProcess, tuple[float, float]]:
    """SIGKILL `old`, start a processor on the same folder; returns it and (seconds to ready, ready time)."""
    old.kill()
    started = time.monotonic()
    new = space.processor(name=name, data_dir=data_dir)
    await bench.ready(new)
    ready = time.monotonic()
    return new, (ready - started, ready)


async def wait_committed(bench: Bench, space: Slice) -> None:
    """Until the processor has committed every input (it commits after flushing what it produced)."""
    deadline = time.monotonic() + 180
    while (left := await uncommitted(bench, space.app_id, space.names.agent_events)) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{left} inputs still uncommitted after 180 s")
        await asyncio.sleep(0.5)


async def stored_size(bench: Bench, changelog: str, key: bytes) -> tuple[int, int]:
    """(bytes of the latest changelog value for `key`, records in its partition): the write volume."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bench.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(changelog, p) for p in await partitions_now(consumer, changelog)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(0, ends[tp] - 20))
        size, records = 0, 0
        for _ in range(10):
            batches = await consumer.getmany(timeout_ms=200)
            for tp, batch in batches.items():
                for record in batch:
                    if record.key == key and record.value is not None:
                        size, records = len(record.value), ends[tp]
        return size, records
    finally:
        await consumer.stop()
