"""The durable engine, turn by turn: schedules, events, cancels and the rejections of bad inputs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from agentstream.agents import agent, condition
from agentstream.streams.engine import AgentRecord, Delivery, DurableEngine, TurnOutcome
from agentstream.streams.engine.dedup import key_digest
from agentstream.topics import (
    AgentStatus,
    AgentUpdate,
    CancelAgent,
    ScheduleAgent,
    SendEvent,
    StepResult,
    derived_message_id,
    run_id_for,
)

COUNTER = "EngineInputsTest.Counter"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


class Item(BaseModel):
    name: str
    qty: int


class Start(BaseModel):
    owner: str


@agent.defn(name=COUNTER)
class EngineTestCounter:
    def __init__(self) -> None:
        self.count = 0
        self.items: list[str] = []
        self.end = False  # same name as the `end` handler below

    @agent.event
    async def add(self, item: Item) -> int:
        self.count += item.qty
        self.items.append(item.name)
        return self.count

    @agent.event
    async def end(self) -> str:
        self.end = True
        return "ended"

    @agent.event(name="explode")
    async def fail(self) -> None:
        self.count = 999
        raise ValueError("boom")

    @agent.event
    async def hang(self) -> str:
        self.count = 42
        await condition(lambda: self.end)
        self.count = 43
        return "resumed"

    @agent.run
    async def run(self, start: Start) -> None:
        await condition(lambda: self.count < 0)  # runs until cancelled


@agent.defn(name="EngineInputsTest.BadInit")
class EngineTestBadInit:
    def __init__(self) -> None:
        raise RuntimeError("no init for you")


@agent.defn(name="EngineInputsTest.Unserialisable")
class EngineTestUnserialisable:
    def __init__(self) -> None:
        self.thing = object()


@pytest.fixture
def engine() -> DurableEngine:
    return DurableEngine()


def schedule(agent_id: str = "c-1", agent_type: str = COUNTER, input: Any = None) -> ScheduleAgent:
    return ScheduleAgent(agent_id=agent_id, agent_type=agent_type, input={"owner": "ada"} if input is None else input)


def event(name: str, payload: Any = None, *, run_id: str | None = None, agent_id: str = "c-1") -> SendEvent:
    return SendEvent(agent_id=agent_id, event=name, payload=payload, run_id=run_id)


async def scheduled(engine: DurableEngine, message: ScheduleAgent | None = None) -> AgentRecord:
    outcome = await engine.apply(None, message or schedule(), T0)
    assert outcome.rejection is None and outcome.record is not None
    return outcome.record


def assert_rejected(outcome: TurnOutcome, code: str, record: AgentRecord | None) -> None:
    assert outcome.rejection is not None, "expected a rejection"
    assert outcome.rejection.code == code, outcome.rejection
    assert outcome.rejection.reason
    if record is None:
        assert outcome.record is None and outcome.stored is None
    else:  # the processor keeps the state it had; only the bookkeeping notes the rejected input
        kept = {"delivery", "outbox"}
        assert outcome.record is not None
        assert outcome.record.model_dump(exclude=kept) == record.model_dump(exclude=kept)
        assert [item.topic for item in outcome.record.outbox][-1] == "dead-letters"
    assert outcome.updates == [] and outcome.commands == []


# --- schedule -----------------------------------------------------------------------------

async def test_schedule_creates_the_record_with_the_fields_of_init_and_a_status_update(engine: DurableEngine) -> None:
    message = schedule()
    outcome = await engine.apply(None, message, T0)

    assert outcome.rejection is None and not outcome.ignored
    record = outcome.record
    assert record is not None
    assert record.agent_id == "c-1"
    assert record.agent_type == COUNTER
    assert record.run_id == run_id_for(message.message_id)
    assert record.status is AgentStatus.RUNNING
    assert record.input == {"owner": "ada"}
    assert record.fields == {"count": 0, "items": [], "end": False}
    assert record.events == []
    assert record.created_at == record.updated_at == T0

    assert outcome.updates == [
        AgentUpdate(
            message_id=derived_message_id(message.message_id, f"update:{record.run_id}:running"),
            agent_id="c-1",
            agent_type=COUNTER,
            run_id=record.run_id,
            status=AgentStatus.RUNNING,
            previous_status=None,
            sent_at=T0,
        )
    ]


async def test_schedule_with_input_failing_the_run_parameter_is_invalid_input(engine: DurableEngine) -> None:
    assert_rejected(await engine.apply(None, schedule(input={"owner": ["not", "a", "str"]}), T0), "invalid_input", None)


async def test_schedule_of_an_unknown_agent_type_is_rejected(engine: DurableEngine) -> None:
    outcome = await engine.apply(None, schedule(agent_type="EngineInputsTest.NoSuchType"), T0)
    assert_rejected(outcome, "unknown_agent_type", None)
    assert "EngineInputsTest.NoSuchType" in outcome.rejection.reason  # type: ignore[union-attr]


@pytest.mark.parametrize("agent_type", ["EngineInputsTest.BadInit", "EngineInputsTest.Unserialisable"])
async def test_schedule_whose_init_fails_or_leaves_bad_fields_is_init_failed(engine: DurableEngine, agent_type: str) -> None:
    assert_rejected(await engine.apply(None, schedule(agent_type=agent_type, input={}), T0), "init_failed", None)


async def test_schedule_while_running_is_already_running(engine: DurableEngine) -> None:
    record = await scheduled(engine)
    assert_rejected(await engine.apply(record, schedule(), T0), "already_running", record)


async def test_schedule_after_cancel_starts_a_new_run_and_keeps_delivery(engine: DurableEngine) -> None:
    record = await scheduled(engine)
    record = (await engine.apply(record, event("add", {"name": "a", "qty": 1}), T0)).record  # type: ignore[assignment]
    record = (await engine.apply(record, CancelAgent(agent_id="c-1"), T0)).record  # type: ignore[assignment]
    record.delivery = Delivery(last_offsets={"events": 7}, recent_keys={"k": 1.0})

    again = schedule()
    later = T0 + timedelta(minutes=1)
    outcome = await engine.apply(record, again, later)
    assert outcome.rejection is None and outcome.record is not None
    assert outcome.record.run_id == run_id_for(again.message_id) != record.run_id
    assert outcome.record.status is AgentStatus.RUNNING
    assert outcome.record.fields == {"count": 0, "items": [], "end": False}
    assert outcome.record.events == []
    assert outcome.record.delivery.last_offsets == record.delivery.last_offsets
    assert [(u.status, u.previous_status) for u in outcome.updates] == [(AgentStatus.RUNNING, AgentStatus.CANCELLED)]


# --- events -------------------------------------------------------------------------------

async def test_events_apply_in_order_and_mutate_fields(engine: DurableEngine) -> None:
    record = await scheduled(engine)
    messages = [event("add", {"name": "a", "qty": 2}), event("add", {"name": "b", "qty": 3}), event("add", {"name": "c", "qty": 1})]
    for i, message in enumerate(messages):
        outcome = await engine.apply(record, message, T0 + timedelta(seconds=i + 1))
        assert outcome.rejection is None and outcome.updates == []
        record = outcome.record  # type: ignore[assignment]

    assert record.fields == {"count": 6, "items": ["a", "b", "c"], "end": False}
    assert [e.message_id for e in record.events] == [m.message_id for m in messages]
    assert [e.result for e in record.events] == [2, 5, 6]
    assert [e.payload for e in record.events] == [m.payload for m in messages]
    assert all(e.error is None and e.name == "add" for e in record.events)
    assert [e.received_at for e in record.events] == [T0 + timedelta(seconds=i) for i in (1, 2, 3)]
    assert record.updated_at == T0 + timedelta(seconds=3)
    assert record.status is AgentStatus.RUNNING


async def test_a_field_may_have_the_same_name_as_a_handler(engine: DurableEngine) -> None:
    record = await scheduled(engine)
    outcome = await engine.apply(record, event("end"), T0)
    assert outcome.rejection is None and outcome.record is not None
    assert outcome.record.fields["end"] is True
    assert outcome.record.events[-1].result == "ended"
    assert outcome.record.events[-1].error is None
    # and it still works once the field holds a value
    again = (await engine.apply(outcome.record, event("end"), T0)).record
    assert again is not None and again.events[-1].error is None


async def test_event_with_a_custom_name_calls_its_method(engine: DurableEngine) -> None:
    record = await scheduled(engine)
    outcome = await engine.apply(record, event("explode"), T0)
    assert outcome.rejection is None
    assert outcome.record is not None and outcome.record.events[-1].name == "explode"
    assert_rejected(await engine.apply(record, event("fail"), T0), "unknown_event", record)  # the method name is not the event


async def test_invalid_payload_is_rejected(engine: DurableEngine) -> None:
    record = await scheduled(engine)
    outcome = await engine.apply(record, event("add", {"name": "a", "qty": "many"}), T0)
    assert_rejected(outcome, "invalid_payload", record)
    assert "qty" in outcome.rejection.reason  # type: ignore[union-attr]


async def test_unknown_event_is_rejected(engine: DurableEngine) -> None:
    record = await scheduled(engine)
    outcome = await engine.apply(record, event("nope"), T0)
    assert_rejected(outcome, "unknown_event", record)
    assert "add" in outcome.rejection.reason  # type: ignore[union-attr]  # lists the known events


async def test_event_for_an_agent_of_an_unregistered_type_is_unknown_agent_type(engine: DurableEngine) -> None:
    record = (await scheduled(engine)).model_copy(update={"agent_type": "EngineInputsTest.Gone"})
    assert_rejected(await engine.apply(record, event("add", {"name": "a", "qty": 1}), T0), "unknown_agent_type", record)


@pytest.mark.parametrize(
    "message",
    [
        SendEvent(agent_id="c-1", event="add", payload={"name": "a", "qty": 1}),
        CancelAgent(agent_id="c-1"),
        StepResult(agent_id="c-1", run_id="r", step_id="s", attempt=1, function="f", ok=True),
    ],
    ids=lambda m: m.kind,
)
async def test_input_before_schedule_is_agent_not_found(engine: DurableEngine, message: Any) -> None:
    assert_rejected(await engine.apply(None, message, T0), "agent_not_found", None)


async def test_handler_raising_records_the_error_and_the_agent_goes_on(engine: DurableEngine) -> None:
    record = (await engine.apply(await scheduled(engine), event("add", {"name": "a", "qty": 2}), T0)).record
    assert record is not None
    outcome = await engine.apply(record, event("explode"), T0)

    assert outcome.rejection is None and outcome.record is not None
    # Like any Python method, what the handler changed before it raised stays changed.
    assert outcome.record.fields == {"count": 999, "items": ["a"], "end": False}
    last = outcome.record.events[-1]
    assert last.error == "ValueError: boom"
    assert last.result is None
    assert outcome.record.status is AgentStatus.RUNNING
    assert outcome.updates == []


async def test_a_waiting_handler_finishes_in_a_later_turn_and_its_result_is_recorded_then(engine: DurableEngine) -> None:
    record = await scheduled(engine)
    outcome = await engine.apply(record, event("hang"), T0)

    assert outcome.rejection is None and outcome.record is not None
    assert outcome.record.fields == {"count": 42, "items": [], "end": False}
    waiting = outcome.record.events[-1]
    assert (waiting.name, waiting.done, waiting.result, waiting.error) == ("hang", False, None, None)
    assert outcome.record.status is AgentStatus.RUNNING

    outcome = await engine.apply(outcome.record, event("end"), T0)
    assert outcome.record is not None
    assert outcome.record.fields == {"count": 43, "items": [], "end": True}
    hang, end = outcome.record.events[-2:]
    assert (hang.name, hang.done, hang.result) == ("hang", True, "resumed")
    assert (end.name, end.done, end.result) == ("end", True, "ended")


# --- cancel and runs ----------------------------------------------------------------------

async def test_cancel_sets_cancelled_publishes_an_update_and_stops_further_inputs(engine: DurableEngine) -> None:
    record = await scheduled(engine)
    cancel = CancelAgent(agent_id="c-1", reason="enough")
    later = T0 + timedelta(seconds=5)
    outcome = await engine.apply(record, cancel, later)

    assert outcome.rejection is None and outcome.record is not None
    cancelled = outcome.record
    assert cancelled.status is AgentStatus.CANCELLED
    assert cancelled.error == "enough"
    assert cancelled.updated_at == later
    assert outcome.updates == [
        AgentUpdate(
            message_id=derived_message_id(cancel.message_id, f"update:{record.run_id}:cancelled"),
            agent_id="c-1",
            agent_type=COUNTER,
            run_id=record.run_id,
            status=AgentStatus.CANCELLED,
            previous_status=AgentStatus.RUNNING,
            error="enough",
            sent_at=later,
        )
    ]

    assert_rejected(await engine.apply(cancelled, event("add", {"name": "a", "qty": 1}), T0), "agent_not_running", cancelled)
    assert_rejected(await engine.apply(cancelled, CancelAgent(agent_id="c-1"), T0), "agent_not_running", cancelled)


async def test_step_result_is_ignored(engine: DurableEngine) -> None:
    record = await scheduled(engine)
    result = StepResult(agent_id="c-1", run_id=record.run_id, step_id="s", attempt=1, function="f", ok=True)
    outcome = await engine.apply(record, result, T0)
    assert outcome.ignored and outcome.rejection is None
    assert outcome.record is not None and outcome.updates == []
    assert outcome.record.model_dump(exclude={"delivery", "outbox"}) == record.model_dump(exclude={"delivery", "outbox"})


@pytest.mark.parametrize("kind", ["event", "cancel"])
async def test_run_id_mismatch_is_rejected_and_the_right_run_id_is_accepted(engine: DurableEngine, kind: str) -> None:
    record = await scheduled(engine)

    def message(run_id: str) -> SendEvent | CancelAgent:
        if kind == "event":
            return event("add", {"name": "a", "qty": 1}, run_id=run_id)
        return CancelAgent(agent_id="c-1", run_id=run_id)

    wrong = await engine.apply(record, message("some-other-run"), T0)
    assert_rejected(wrong, "run_mismatch", record)
    right = await engine.apply(record, message(record.run_id), T0)
    assert right.rejection is None


# --- purity -------------------------------------------------------------------------------

async def test_the_engine_never_mutates_the_record_it_was_given(engine: DurableEngine) -> None:
    base = (await engine.apply(await scheduled(engine), event("add", {"name": "a", "qty": 2}), T0)).record
    assert base is not None
    base.delivery = Delivery(last_offsets={"t": 3}, recent_keys={"k": 1.0})
    cancelled = (await engine.apply(base, CancelAgent(agent_id="c-1"), T0)).record
    assert cancelled is not None
    cases: list[tuple[AgentRecord, Any]] = [
        (base, event("add", {"name": "b", "qty": 5})),
        (base, event("end")),
        (base, event("explode")),
        (base, event("hang")),
        (base, event("nope")),
        (base, event("add", {"bad": 1})),
        (base, event("add", {"name": "b", "qty": 5}, run_id="other")),
        (base, CancelAgent(agent_id="c-1", reason="r")),
        (base, schedule()),
        (base, StepResult(agent_id="c-1", run_id="r", step_id="s", attempt=1, function="f", ok=True)),
        (cancelled, schedule()),
        (cancelled, event("add", {"name": "b", "qty": 5})),
    ]
    for record, message in cases:
        before = record.model_dump()
        outcome = await engine.apply(record, message, T0 + timedelta(hours=1))
        assert record.model_dump() == before, f"{message.kind} mutated the record"
        if outcome.record is not None and outcome.record is not record:
            outcome.record.fields["poison"] = 1
            outcome.record.delivery.recent_keys[key_digest("poison")] = 1
            assert record.model_dump() == before, f"{message.kind}: the new record shares state with the old one"
