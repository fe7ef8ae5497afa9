"""A record's life in the processor is total: every input ends in exactly one recorded outcome.

Findings 4, 7, 8 and 10 of the durable-core issue: exceptions anywhere (agent code after
a deploy, the engine, a record from a newer version, a topic that does not exist) park
the agent or dead-letter the input and never escape; a turn's outputs live in an outbox
in the record and are published from there, also after a crash; an input counts as
done only once its record is on the changelog and its outputs are acknowledged.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from collections.abc import Awaitable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agentstream.agents import agent, condition, function
from agentstream.streams.engine import AgentRecord, DedupPolicy, DurableEngine, EngineConfig
from agentstream.streams.engine.dedup import key_digest
from agentstream.streams.processor.exceptions import UndeliverableError
from agentstream.streams.processor.handler import InputHandler
from agentstream.streams.processor.metrics import ProcessorMetrics
from agentstream.topics import (
    AgentStatus,
    CancelAgent,
    DeadLetter,
    Envelope,
    ScheduleAgent,
    SendEvent,
    StepCommand,
    StepResult,
    TimerFired,
    TopicNames,
)

NAMES = TopicNames("total.")


@function
async def total_step(value: int) -> int:
    return value


@agent.defn(name="Total.Typed")
class Typed:
    count: int

    def __init__(self) -> None:
        self.count = 0

    @agent.event
    async def bump(self) -> int:
        self.count += 1
        return self.count

    @agent.event
    async def queue(self, name: str) -> str:
        return await agent.step(function=total_step, function_input=1, task_queue=name)  # type: ignore[no-any-return]


@agent.defn(name="Total.Parent")
class Parent:
    @agent.event
    async def spawn(self, n: int) -> None:
        for i in range(n):
            await agent.child_start(agent="Total.Typed", agent_id=f"kid-{i}")

    @agent.run
    async def run(self) -> None:
        await condition(lambda: False)


class AckedStore:
    """A store whose writes reach 'the changelog' only when the test says so."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog: dict[bytes, bytes] = {}
        self.hold = False
        self.acks: list[asyncio.Future[None]] = []

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> Awaitable[None]:
        self.data[key] = value
        return self._acknowledge(key, value)

    async def _acknowledge(self, key: bytes, value: bytes) -> None:
        if self.hold:
            ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.acks.append(ack)
            await ack
        self.changelog[key] = value


class Publisher:
    """Publishes into a list; can lose everything (a crash) or refuse a topic."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.lose_all = False
        self.missing: set[str] = set()

    async def publish(self, topic: str, key: bytes | None, value: bytes) -> None:
        if topic in self.missing:
            raise UndeliverableError(f"topic {topic} does not exist")
        if not self.lose_all:
            self.sent.append((topic, key, value))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(value) for t, _, value in self.sent if t == topic]


@dataclass
class Processor:
    store: AckedStore = field(default_factory=AckedStore)
    publisher: Publisher = field(default_factory=Publisher)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """A new process on the same store: no live agents, nothing remembered in memory."""
        self.registry = CollectorRegistry()
        self.handler = InputHandler(
            names=NAMES, engine=DurableEngine(EngineConfig(dedup=DedupPolicy(window_s=3600.0, max_keys=5))),
            store=self.store, publisher=self.publisher, metrics=ProcessorMetrics.create(self.registry),
            identity="total-test",
        )

    async def send(self, message: Envelope, offset: int) -> str:
        topic = NAMES.step_results if isinstance(message, StepResult) else NAMES.agent_events
        return await self.handler.handle(topic, 0, offset, message.key, message.to_bytes())

    def record(self, agent_id: str) -> AgentRecord:
        return AgentRecord.from_bytes(self.store.data[agent_id.encode()])

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.model_validate(v) for v in self.publisher.on(NAMES.dead_letters)]


@pytest.fixture
def p() -> Processor:
    return Processor()


def typed(agent_id: str = "a") -> ScheduleAgent:
    return ScheduleAgent(agent_id=agent_id, agent_type="Total.Typed")


def bump(agent_id: str = "a", **kwargs: Any) -> SendEvent:
    return SendEvent(agent_id=agent_id, event="bump", **kwargs)


# --- 4: no exception drops an input ---------------------------------------------------------


async def test_a_field_that_no_longer_validates_after_a_deploy_parks_the_agent_with_the_input(p: Processor) -> None:
    await p.send(typed(), 0)
    await p.send(bump(), 1)
    record = p.record("a")
    record.fields["count"] = "no longer an int"  # what an older version stored
    if record.base is not None and record.base.fields is not None:
        record.base.fields["count"] = "no longer an int"
    p.store.data[b"a"] = record.to_bytes()
    p.restart()

    assert await p.send(bump(), 2) == "parked"
    record = p.record("a")
    assert record.status is AgentStatus.STUCK and record.error and "count" in record.error
    assert [item["event"] for item in record.parked] == ["bump"]


async def test_an_event_whose_handler_was_removed_parks_the_agent_instead_of_crashing(p: Processor) -> None:
    await p.send(typed(), 0)
    record = p.record("a")
    # a journal written by a version that had an event this one removed
    assert record.base is not None
    record.journal.append(record.journal[0].model_copy(update={"name": "removed"}) if record.journal else
                          _journal_event("removed"))
    p.store.data[b"a"] = record.to_bytes()
    p.restart()

    assert await p.send(bump(), 1) == "parked"
    assert p.record("a").status is AgentStatus.STUCK
    assert "removed" in (p.record("a").error or "")


def _journal_event(name: str) -> Any:
    from datetime import datetime, timezone

    from agentstream.streams.engine.record import JournalEntry

    return JournalEntry(kind="event", at=datetime.now(timezone.utc), message_id="old-event", name=name)


async def test_a_record_written_by_a_newer_version_dead_letters_the_input_and_keeps_the_record(p: Processor) -> None:
    await p.send(typed(), 0)
    newer = json.loads(p.store.data[b"a"])
    newer["a_field_from_the_future"] = {"x": 1}
    stored = json.dumps(newer).encode()
    p.store.data[b"a"] = stored

    assert await p.send(bump(), 1) == "dead_lettered"
    [letter] = p.dead_letters()
    assert letter.reason_code == "record_unreadable" and "newer" in letter.reason
    assert p.store.data[b"a"] == stored


async def test_a_step_on_a_queue_without_a_topic_parks_the_agent_and_keeps_the_command(p: Processor) -> None:
    await p.send(typed(), 0)
    p.publisher.missing.add(NAMES.step_commands("nowhere"))

    assert await p.send(SendEvent(agent_id="a", event="queue", payload="nowhere"), 1) == "parked"
    record = p.record("a")
    assert record.status is AgentStatus.STUCK and NAMES.step_commands("nowhere") in (record.error or "")
    assert "step-commands" in [item.topic for item in record.outbox]  # kept, with the stuck update

    # the topic is created and the processor restarted: the next input delivers the command
    p.publisher.missing.clear()
    p.restart()
    assert await p.send(bump(), 2) == "applied"
    assert [c["task_queue"] for c in p.publisher.on(NAMES.step_commands("nowhere"))] == ["nowhere"]
    assert p.record("a").status is AgentStatus.RUNNING and p.record("a").fields["count"] == 1


async def test_an_engine_bug_parks_the_agent_and_the_processor_goes_on(p: Processor, monkeypatch: Any) -> None:
    await p.send(typed(), 0)
    await p.send(typed("b"), 1)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(DurableEngine, "_event", broken)
    assert await p.send(bump(), 2) == "parked"
    assert "a bug in the engine" in (p.record("a").error or "")
    monkeypatch.undo()
    assert await p.send(bump("b"), 3) == "applied"


# --- 7: an outbox: every output is published from the record, also after a crash ------------


async def test_outputs_lost_in_a_crash_are_published_on_redelivery_including_updates_cancels_and_dead_letters(
    p: Processor,
) -> None:
    await p.send(ScheduleAgent(agent_id="par", agent_type="Total.Parent"), 0)
    await p.send(SendEvent(agent_id="par", event="spawn", payload=2), 1)
    p.publisher.lose_all = True  # the process dies before anything of this turn reaches the broker
    cancel = CancelAgent(agent_id="par", reason="enough", cancel_children=True)
    await p.send(cancel, 2)
    assert p.record("par").status is AgentStatus.CANCELLED

    p.publisher.lose_all = False
    p.restart()
    assert await p.send(cancel, 2) == "duplicate"  # redelivered: the outbox goes out again
    assert [u["status"] for u in p.publisher.on(NAMES.agent_updates)][-1] == "cancelled"
    assert sorted(c["agent_id"] for c in p.publisher.on(NAMES.agent_events) if c["kind"] == "cancel") == [
        "kid-0", "kid-1"]

    # a dead letter of an existing agent is in the outbox too
    p.publisher.lose_all = True
    late = bump("par")
    assert await p.send(late, 3) == "dead_lettered"
    p.publisher.lose_all = False
    p.restart()
    assert await p.send(late, 3) == "duplicate"
    assert [d.reason_code for d in p.dead_letters()] == ["agent_not_running"]


# --- 8: an input is done only once its record is on the changelog ----------------------------


async def test_an_input_is_not_done_before_its_changelog_write_is_acknowledged(p: Processor) -> None:
    await p.send(typed(), 0)
    p.store.hold = True
    handling = asyncio.ensure_future(p.send(bump(), 1))
    deadline = asyncio.get_running_loop().time() + 10
    while not p.store.acks and not handling.done() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert p.store.acks, "the record was never written through the changelog"
    await asyncio.sleep(0.05)
    assert not handling.done(), "the input counted as done before the changelog had its record"
    p.store.hold = False
    for ack in p.store.acks:
        ack.set_result(None)
    assert await handling == "applied"
    assert p.store.changelog[b"a"] == p.store.data[b"a"]


# --- 10: internal inputs stay out of the idempotency window; record size is a metric -----------


async def test_step_results_and_timers_do_not_evict_client_idempotency_keys(p: Processor) -> None:
    await p.send(typed(), 0)
    assert await p.send(bump(idempotency_key="pay-1"), 1) == "applied"
    run_id = p.record("a").run_id
    for i in range(20):  # far more internal inputs than the 5 keys the window holds
        late = StepResult(agent_id="a", run_id=run_id, step_id=str(100 + i), attempt=1, function="f", ok=True)
        assert await p.send(late, i) == "ignored"
        fire = TimerFired(agent_id="a", run_id=run_id, timer_id=f"t:{900 + i}", fire_at=late.sent_at)
        assert await p.send(fire, 2 + i) == "ignored"
    assert await p.send(bump(idempotency_key="pay-1"), 30) == "duplicate"
    assert p.record("a").fields["count"] == 1
    keys = p.record("a").delivery.recent_keys
    assert key_digest("pay-1") in keys and len(keys) == 2  # the schedule's ID and pay-1: nothing internal


async def test_record_size_is_exported(p: Processor) -> None:
    await p.send(typed(), 0)
    assert (p.registry.get_sample_value("agentstream_record_bytes_count") or 0) >= 1
    assert (p.registry.get_sample_value("agentstream_record_bytes_sum") or 0) >= len(p.store.data[b"a"])
