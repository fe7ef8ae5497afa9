"""InputHandler: decode, de-duplicate, apply, persist and publish, without Kafka."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from collections.abc import Awaitable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agentstream.agents import agent
from agentstream.streams.engine import AgentRecord, DedupPolicy, DurableEngine, EngineConfig
from agentstream.streams.processor.handler import InputHandler
from agentstream.streams.processor.metrics import ProcessorMetrics
from agentstream.topics import (
    AgentStatus,
    AgentUpdate,
    CancelAgent,
    DeadLetter,
    Envelope,
    ScheduleAgent,
    SendEvent,
    StepResult,
    TopicNames,
    derived_message_id,
    run_id_for,
)

AGENT_TYPE = "HandlerTest.Tally"
NAMES = TopicNames("test.")
IDENTITY = "processor-test"


@agent.defn(name=AGENT_TYPE)
class HandlerTestTally:
    def __init__(self) -> None:
        self.total = 0

    @agent.event
    async def add(self, n: int) -> int:
        self.total += n
        return self.total


class DictStore:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.writes = 0

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> Awaitable[None]:
        self.writes += 1
        self.data[key] = value
        return acknowledged()


async def acknowledged() -> None:
    """An acknowledgement that has arrived."""


class ListPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def publish(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))

    def on(self, topic: str) -> list[tuple[bytes | None, Any]]:
        return [(key, json.loads(value)) for t, key, value in self.sent if t == topic]


@dataclass
class Harness:
    store: DictStore = field(default_factory=DictStore)
    publisher: ListPublisher = field(default_factory=ListPublisher)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.handler = InputHandler(
            names=NAMES,
            engine=DurableEngine(EngineConfig(dedup=DedupPolicy(window_s=3600.0, max_keys=100))),
            store=self.store,
            publisher=self.publisher,
            metrics=ProcessorMetrics.create(self.registry),
            identity=IDENTITY,
        )

    async def send(self, message: Envelope, offset: int, *, key: bytes | None | str = "same", partition: int = 0) -> str:
        topic = NAMES.step_results if isinstance(message, StepResult) else NAMES.agent_events
        record_key = message.key if key == "same" else key
        return await self.handler.handle(topic, partition, offset, record_key, message.to_bytes())  # type: ignore[arg-type]

    def record(self, agent_id: str = "t-1") -> AgentRecord:
        return AgentRecord.from_bytes(self.store.data[agent_id.encode()])

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.model_validate(value) for _, value in self.publisher.on(NAMES.dead_letters)]

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def h() -> Harness:
    return Harness()


def schedule(agent_id: str = "t-1", **kwargs: Any) -> ScheduleAgent:
    return ScheduleAgent(agent_id=agent_id, agent_type=AGENT_TYPE, **kwargs)


def add(n: int, agent_id: str = "t-1", **kwargs: Any) -> SendEvent:
    return SendEvent(agent_id=agent_id, event="add", payload=n, **kwargs)


# --- bad records ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b"\xff\xfenot json", "not_json"),
        (b"{\"kind\": \"schedule\"", "not_json"),
        (b"", "empty_value"),
        (None, "empty_value"),
        (b'{"kind": "schedule", "agent_id": "t-1"}', "invalid_envelope"),
        (b'{"kind": "event", "agent_id": "t-1", "event": "add", "extra": 1}', "invalid_envelope"),
    ],
)
async def test_malformed_record_is_dead_lettered_with_its_reason_and_nothing_is_stored(
    h: Harness, value: bytes | None, code: str
) -> None:
    outcome = await h.handler.handle(NAMES.agent_events, 2, 41, b"t-1", value)

    assert outcome == "dead_lettered"
    assert h.store.data == {} and h.store.writes == 0
    assert [topic for topic, _, _ in h.publisher.sent] == [NAMES.dead_letters]
    [letter] = h.dead_letters()
    assert letter.reason_code == code and letter.reason
    assert (letter.source_topic, letter.partition, letter.offset, letter.key) == (NAMES.agent_events, 2, 41, "t-1")
    assert letter.rejected_by == IDENTITY
    assert letter.original_value() == (value or b"")
    assert h.publisher.sent[0][1] == b"t-1"  # dead letters keep the original key


@pytest.mark.parametrize("key", [b"someone-else", None])
async def test_key_that_differs_from_agent_id_is_dead_lettered(h: Harness, key: bytes | None) -> None:
    outcome = await h.send(schedule(), 0, key=key)

    assert outcome == "dead_lettered"
    assert h.store.data == {}
    [letter] = h.dead_letters()
    assert letter.reason_code == "key_mismatch"
    assert letter.key == (key.decode() if key else None)


async def test_unknown_agent_type_is_dead_lettered_and_nothing_stored(h: Harness) -> None:
    message = ScheduleAgent(agent_id="t-1", agent_type="HandlerTest.NoSuchType")
    assert await h.send(message, 0) == "dead_lettered"

    assert h.store.data == {}
    [letter] = h.dead_letters()
    assert letter.reason_code == "unknown_agent_type"
    assert json.loads(letter.original_value()) == json.loads(message.to_bytes())
    assert h.publisher.on(NAMES.agent_updates) == []


async def test_rejected_input_of_an_existing_agent_keeps_its_state_and_is_not_dead_lettered_twice(h: Harness) -> None:
    await h.send(schedule(), 0)
    before = h.record()
    bad = SendEvent(agent_id="t-1", event="nope")

    assert await h.send(bad, 1) == "dead_lettered"
    after = h.record()
    assert after.fields == before.fields and after.events == before.events
    assert after.delivery.last_offsets[f"{NAMES.agent_events}#0"] == 1
    assert [letter.reason_code for letter in h.dead_letters()] == ["unknown_event"]

    # the same record redelivered after a crash is a duplicate, not a second dead letter
    assert await h.send(bad, 1) == "duplicate"
    assert len(h.dead_letters()) == 1


# --- exactly once --------------------------------------------------------------------------

async def test_redelivered_offset_is_a_duplicate_and_leaves_state_unchanged(h: Harness) -> None:
    await h.send(schedule(), 0)
    event = add(5)
    assert await h.send(event, 1) == "applied"
    stored = h.store.data[b"t-1"]
    published = len(h.publisher.sent)

    assert await h.send(add(7), 1) == "duplicate"  # a different record at an offset already applied
    assert await h.send(event, 0) == "duplicate"

    assert h.store.data[b"t-1"] == stored
    assert h.record().fields == {"total": 5}
    assert len(h.publisher.sent) == published


async def test_same_idempotency_key_at_different_offsets_is_applied_once(h: Harness) -> None:
    await h.send(schedule(), 0)
    first, second = add(5, idempotency_key="pay-1"), add(5, idempotency_key="pay-1")
    assert first.message_id != second.message_id

    assert await h.send(first, 1) == "applied"
    assert await h.send(second, 2) == "duplicate"

    record = h.record()
    assert record.fields == {"total": 5}
    assert [e.message_id for e in record.events] == [first.message_id]
    assert record.inputs_applied == 2  # the schedule and the first event
    assert record.delivery.last_offsets[f"{NAMES.agent_events}#0"] == 2  # the duplicate's offset is consumed

    assert await h.send(add(1, idempotency_key="pay-2"), 3) == "applied"
    assert h.record().fields == {"total": 6}


async def test_same_message_id_at_different_offsets_is_applied_once(h: Harness) -> None:
    await h.send(schedule(), 0)
    event = add(3)
    assert await h.send(event, 1) == "applied"
    assert await h.send(event, 2) == "duplicate"  # a producer retry: same record, new offset
    assert h.record().fields == {"total": 3}


async def test_duplicate_schedule_does_not_restart_the_agent(h: Harness) -> None:
    message = schedule()
    assert await h.send(message, 0) == "applied"
    assert await h.send(add(2), 1) == "applied"
    assert await h.send(message, 2) == "duplicate"
    assert h.record().fields == {"total": 2}
    assert h.dead_letters() == []


# --- other outcomes -----------------------------------------------------------------------

async def test_step_result_for_an_agent_is_ignored(h: Harness) -> None:
    await h.send(schedule(), 0)
    result = StepResult(agent_id="t-1", run_id=h.record().run_id, step_id="s", attempt=1, function="f", ok=True)

    assert await h.send(result, 0) == "ignored"

    record = h.record()
    assert record.inputs_applied == 1  # only the schedule
    assert record.delivery.last_offsets == {f"{NAMES.agent_events}#0": 0, f"{NAMES.step_results}#0": 0}
    assert h.dead_letters() == []
    assert await h.send(result, 0) == "duplicate"


async def test_status_updates_are_published_on_agent_updates(h: Harness) -> None:
    message = schedule()
    await h.send(message, 0)
    await h.send(add(1), 1)
    cancel = CancelAgent(agent_id="t-1", reason="stop")
    await h.send(cancel, 2)

    updates = h.publisher.on(NAMES.agent_updates)
    assert [key for key, _ in updates] == [b"t-1", b"t-1"]
    parsed = [AgentUpdate.model_validate(value) for _, value in updates]
    run_id = run_id_for(message.message_id)
    assert [(u.status, u.previous_status, u.run_id) for u in parsed] == [
        (AgentStatus.RUNNING, None, run_id),
        (AgentStatus.CANCELLED, AgentStatus.RUNNING, run_id),
    ]
    assert [u.message_id for u in parsed] == [
        derived_message_id(message.message_id, f"update:{run_id}:running"),
        derived_message_id(cancel.message_id, f"update:{run_id}:cancelled"),
    ]
    assert parsed[1].error == "stop"
    assert {topic for topic, _, _ in h.publisher.sent} == {NAMES.agent_updates}
    assert h.record().status is AgentStatus.CANCELLED


async def test_metric_counters_move(h: Harness) -> None:
    await h.send(schedule(), 0)  # applied, status running
    await h.send(add(1), 1)  # applied
    await h.send(add(1), 1)  # duplicate
    await h.send(SendEvent(agent_id="t-1", event="nope"), 2)  # dead letter unknown_event
    await h.handler.handle(NAMES.agent_events, 0, 3, b"t-1", b"garbage")  # dead letter not_json
    await h.send(StepResult(agent_id="t-1", run_id="r", step_id="s", attempt=1, function="f", ok=True), 0)  # ignored
    await h.send(CancelAgent(agent_id="t-1"), 4)  # applied, status cancelled

    def inputs(source: str, outcome: str) -> float:
        return h.sample("agentstream_inputs_total", source=source, outcome=outcome)

    assert inputs("agent-events", "applied") == 3
    assert inputs("agent-events", "duplicate") == 1
    assert inputs("agent-events", "dead_lettered") == 2
    assert inputs("step-results", "ignored") == 1
    assert h.sample("agentstream_dead_letters_total", reason="unknown_event") == 1
    assert h.sample("agentstream_dead_letters_total", reason="not_json") == 1
    assert h.sample("agentstream_agent_status_changes_total", status="running") == 1
    assert h.sample("agentstream_agent_status_changes_total", status="cancelled") == 1
    assert h.sample("agentstream_agent_updates_published_total") == 2
    assert h.sample("agentstream_turn_duration_seconds_count") == 7


async def test_an_idempotency_key_older_than_the_window_no_longer_drops_a_resend(h: Harness) -> None:
    """Keys expire even for an agent that received nothing else since (pruned before the check)."""
    await h.send(schedule(), 0)
    assert await h.send(add(5, idempotency_key="pay-1"), 1) == "applied"
    record = h.record()
    for key in record.delivery.recent_keys:  # as if all was sent two hours ago; the window is one hour
        record.delivery.recent_keys[key] -= 7200
    h.store.data[b"t-1"] = record.to_bytes()

    assert await h.send(add(5, idempotency_key="pay-1"), 2) == "applied"
    assert h.record().fields == {"total": 10}


async def test_offsets_are_tracked_per_partition(h: Harness) -> None:
    """After a partition-count change an agent's inputs arrive on another partition, with unrelated offsets."""
    await h.send(schedule(), 500, partition=0)
    assert await h.send(add(1), 3, partition=1) == "applied"
    assert h.record().fields == {"total": 1}


# --- inputs in flight -----------------------------------------------------------------------


class HeldStore(DictStore):
    """A store whose next write's acknowledgement is held until the test settles it."""

    def __init__(self) -> None:
        super().__init__()
        self.hold: asyncio.Future[None] | None = None
        self.written: list[bytes] = []

    def put(self, key: bytes, value: bytes) -> Awaitable[None]:
        self.written.append(value)
        acked = super().put(key, value)
        if self.hold is None:
            return acked
        acked.close()
        held, self.hold = self.hold, None
        return held


async def scheduled_with_next_write_held() -> tuple[Harness, HeldStore, asyncio.Future[None]]:
    """A harness whose agent t-1 is scheduled; the acknowledgement of its next write waits for the test."""
    store = HeldStore()
    h = Harness(store=store)
    await h.send(schedule(), 0)
    store.hold = asyncio.get_running_loop().create_future()
    return h, store, store.hold


async def test_a_failed_record_write_is_written_again_as_the_agents_latest_record() -> None:
    """The next input may write the agent before the last one's write is acknowledged; if that
    acknowledgement then fails, writing the older record again would take the agent back a turn."""
    h, store, failing = await scheduled_with_next_write_held()
    _, first = await h.handler.begin(NAMES.agent_events, 0, 1, b"t-1", add(1).to_bytes())
    _, second = await h.handler.begin(NAMES.agent_events, 0, 2, b"t-1", add(2).to_bytes())
    await second
    failing.set_exception(ConnectionError("the broker dropped the write"))
    await first
    assert AgentRecord.from_bytes(store.written[-1]).fields == {"total": 3}
    assert h.record().fields == {"total": 3}


async def test_a_result_waiter_is_woken_once_the_ending_turn_is_durable_not_before() -> None:
    """`GET /agents/{id}/result?wait=` answers from the stored record, which holds the ending turn
    only once its write is acknowledged; waking the request at apply time answered "running"."""
    h, _, held = await scheduled_with_next_write_held()
    with h.handler.results.watching("t-1") as ended:
        _, durable = await h.handler.begin(NAMES.agent_events, 0, 1, b"t-1", CancelAgent(agent_id="t-1").to_bytes())
        confirming = asyncio.ensure_future(durable)
        await asyncio.sleep(0)
        assert not ended.done()
        held.set_result(None)
        await confirming
        assert ended.done()
