"""Long-lived agents: history stays bounded, so restarting an old agent costs what a young one does.

`engine_long_lived` drives the pure engine in-process (no Kafka): many events into one
agent whose `run` waits on a condition, tracking the journal after every turn and the
record's size; a "restart" is a fresh `DurableEngine` (no cached live agent) decoding the
stored bytes and applying one more event, which forces a rebuild from the record.
`restart.py` does the same through a real processor killed with SIGKILL.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from agentstream.streams.engine import AgentRecord, DurableEngine
from agentstream.topics import ScheduleAgent, SendEvent

import agents  # noqa: F401  (registers the benchmark's agent types in this process)
from harness import Bench, Row, median

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
RESTARTS = 15


async def feed(agent_id: str, events: int) -> tuple[AgentRecord, int, float]:
    """(record, max journal length after any turn, seconds) after scheduling and `events` events."""
    engine = DurableEngine()
    now = T0
    outcome = await engine.apply(None, ScheduleAgent(agent_id=agent_id, agent_type="BenchCounter"), now)
    record, longest = outcome.record, 0
    started = time.perf_counter()
    for _ in range(events):
        now += timedelta(milliseconds=10)
        outcome = await engine.apply(record, SendEvent(agent_id=agent_id, event="add", payload=1), now)
        assert outcome.rejection is None and outcome.record is not None, outcome.rejection
        record = outcome.record
        longest = max(longest, len(record.journal))
    elapsed = time.perf_counter() - started
    engine.close()
    assert record.fields["count"] == events, record.fields
    return record, longest, elapsed


async def restart_ms(record: AgentRecord) -> float:
    """Ms for a fresh engine to decode the stored record and apply one more event (rebuilds the agent)."""
    stored = record.to_bytes()
    engine = DurableEngine()
    event = SendEvent(agent_id=record.agent_id, event="add", payload=1)
    started = time.perf_counter()
    outcome = await engine.apply(AgentRecord.from_bytes(stored), event, record.updated_at + timedelta(seconds=1))
    took = (time.perf_counter() - started) * 1000
    engine.close()
    assert outcome.record is not None and outcome.record.fields["count"] == record.fields["count"] + 1
    return took


async def restarts(*records: AgentRecord) -> list[float]:
    """Median restart ms per record, alternating between them so drift hits all alike."""
    times: list[list[float]] = [[] for _ in records]
    for _ in range(RESTARTS):
        for i, record in enumerate(records):
            times[i].append(await restart_ms(record))
    return [median(t) for t in times]


async def engine_long_lived(bench: Bench) -> list[Row]:
    many = 20_000 if bench.quick else 100_000
    old, old_journal, elapsed = await feed("old", many)
    young, young_journal, _ = await feed("young", 10)
    old_ms, young_ms = await restarts(old, young)
    return [
        Row("engine turns/s, one hot agent", f"{many / elapsed:,.0f}", "events/s",
            f"in-process DurableEngine.apply, live agent cached; {many:,} events"),
        Row("long-lived: max journal length", str(old_journal), "entries",
            f"after every turn of {many:,} events (young agent: {young_journal})"),
        Row("long-lived: record size", f"{len(old.to_bytes()):,}", "bytes",
            f"after {many:,} events ({old.compactions:,} compactions); 10-event agent {len(young.to_bytes()):,} B; "
            f"the old one keeps {len(old.delivery.recent_keys):,} idempotency keys "
            f"({len(old.delivery.model_dump_json()):,} B) and the last {len(old.events)} events kept for the API "
            f"({len(old.model_dump_json(include={'events'})):,} B)"),
        Row(f"restart + 1 event, {many:,}-event agent", f"{old_ms:.2f}", "ms",
            f"new DurableEngine: decode record, rebuild agent, apply; median of {RESTARTS}"),
        Row("restart + 1 event, 10-event agent", f"{young_ms:.2f}", "ms", f"same, median of {RESTARTS}"),
    ]
