"""The durable engine: runs agents' code turn by turn, with a journal to replay it.

`apply` validates an input against the agent's record, then runs a turn: deliver the
input to the live agent (from a cache, or rebuilt by replaying the journal), drain
its loop, and turn what the code issued into records to send. Each turn runs on a
turn thread with a time limit, so code that blocks is reported, not waited for.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from agentstream.agents._registry import AgentDefinition, agent_definition
from agentstream.agents.exceptions import NondeterminismError, UnknownAgentTypeError
from agentstream.topics import (
    AgentStatus,
    CancelAgent,
    ChildCompleted,
    ScheduleAgent,
    SendEvent,
    StepResult,
    TimerFired,
    run_id_for,
)

from . import steps
from .base import Input, TurnFacts, TurnOutcome
from .record import AgentRecord, Base, Delivery, JournalEntry, Outcome, Seed
from .replay import deliver, identity_of, replay
from .runtime import LiveAgent, Mode
from .turn import TurnWriter, child_schedule, report_to_parent, status_update

log = logging.getLogger("agentstream.engine")

TERMINAL = {AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.CANCELLED}
_input_adapter: TypeAdapter[Input] = TypeAdapter(Input)


@dataclass(frozen=True)
class EngineConfig:
    task_queue: str = "restack"
    turn_timeout_s: float = 5.0
    continue_as_new_after: int = 2000
    recent_events: int = 100
    cache_size: int = 10_000
    max_parked: int = 10_000


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:5])


class DurableEngine:
    def __init__(
        self, config: EngineConfig | None = None, lookup: Callable[[str], AgentDefinition] = agent_definition
    ) -> None:
        self.config = config or EngineConfig()
        self._lookup = lookup
        self._cache: OrderedDict[str, LiveAgent] = OrderedDict()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="agentstream-turn")
        self._unstick_tried: set[str] = set()

    async def apply(self, record: AgentRecord | None, message: Input, now: datetime) -> TurnOutcome:
        # Live state leaves the cache for the turn: a turn that overruns never puts it back.
        live = self._cache.pop(message.agent_id, None)
        future = self._pool.submit(self.apply_now, record, message, now, live)
        try:
            outcome, live = await asyncio.wait_for(asyncio.wrap_future(future), self.config.turn_timeout_s)
        except asyncio.TimeoutError:
            # The thread cannot be stopped; it is abandoned with the live state it holds.
            self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="agentstream-turn")
            return self._blocked(record, message, now)
        if live is not None:
            self._cache[message.agent_id] = live
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return outcome

    def pending_outputs(self, record: AgentRecord) -> TurnOutcome:
        """What the record still expects to have been sent: step commands in flight, child
        schedules, the report to a parent. Sent again when a crash may have lost them
        (the record was saved, the records it produced were not); all are idempotent."""
        outcome = TurnOutcome(record=record)
        if record.status in TERMINAL:
            if record.parent is not None:
                outcome.messages.append(report_to_parent(record))
            return outcome
        for step in record.steps.values():
            if f"retry:{step.seq}" not in record.timers:
                outcome.commands.append(steps.command_for(record, step))
        for seq, child in record.children.items():
            if not child.done and child.message_id:
                outcome.messages.append(child_schedule(record, int(seq), child))
        return outcome

    def forget(self, agent_id: str) -> None:
        self._cache.pop(agent_id, None)

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    # -- dispatch (runs on the turn thread) --------------------------------------------

    def apply_now(
        self, record: AgentRecord | None, message: Input, now: datetime, live: LiveAgent | None = None
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        try:
            return self._dispatch(record, message, now, live)
        except _ReplayFailed as failed:
            assert record is not None
            # The input that found the problem is kept with the agent, like any later one.
            return self._park(record.evolve(parked=[*record.parked, _parkable(message)]), now, failed.cause), None

    def _dispatch(
        self, record: AgentRecord | None, message: Input, now: datetime, live: LiveAgent | None
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        if isinstance(message, ScheduleAgent):
            return self._schedule(record, message, now)
        user_input = isinstance(message, (SendEvent, CancelAgent))
        if record is None:
            return TurnOutcome.rejected(
                None, "agent_not_found",
                f"agent {message.agent_id!r} was never scheduled; schedule it before sending it inputs",
            ), None
        if record.status in TERMINAL:
            if user_input:
                return TurnOutcome.rejected(
                    record, "agent_not_running", f"agent {record.agent_id!r} is {record.status.value}; it takes no more inputs"
                ), None
            return TurnOutcome(record=record, ignored=True), None
        if message.run_id not in (None, record.run_id):
            if user_input:
                return TurnOutcome.rejected(
                    record, "run_mismatch",
                    f"input is for run {message.run_id} but agent {record.agent_id!r} runs {record.run_id}",
                ), live
            return TurnOutcome(record=record, ignored=True), live  # a result for an earlier run
        if isinstance(message, CancelAgent):  # also ends a stuck agent: its code need not run
            return self._cancel(record, message, now), None
        if record.status is AgentStatus.STUCK:
            return self._stuck_input(record, message, now)
        if isinstance(message, SendEvent):
            return self._event(record, message, now, live)
        if isinstance(message, StepResult):
            return self._step_result(record, message, now, live)
        if isinstance(message, TimerFired):
            return self._timer(record, message, now, live)
        return self._child_result(record, message, now, live)

    def _definition(self, name: str) -> AgentDefinition:
        return self._lookup(name)

    def _schedule(
        self, record: AgentRecord | None, message: ScheduleAgent, now: datetime
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        def reject(code: str, reason: str) -> tuple[TurnOutcome, None]:
            outcome = TurnOutcome.rejected(record, code, reason)
            if message.parent is not None:  # the parent waits for this child: tell it
                outcome.messages.append(TurnWriter.child_failed_to_start(message, reason))
            return outcome, None

        if record is not None and record.run_id == run_id_for(message.message_id):
            return TurnOutcome(record=record, ignored=True), None  # this very schedule, sent again
        if record is not None and record.status not in TERMINAL:
            return reject(
                "already_running",
                f"agent {message.agent_id!r} is already running as {record.agent_type}; cancel it first or pick another agent ID",
            )
        try:
            definition = self._definition(message.agent_type)
        except UnknownAgentTypeError as exc:
            return reject("unknown_agent_type", str(exc))
        try:
            if definition.run_parameter is not None:
                definition.run_parameter.arguments(message.input)
        except ValidationError as exc:
            return reject("invalid_input", f"input of {definition.name}: {_validation_message(exc)}")
        seeds = [Seed(kind="run", payload=message.input)] if definition.run_method else []
        new = AgentRecord(
            agent_id=message.agent_id,
            agent_type=definition.name,
            run_id=run_id_for(message.message_id),
            status=AgentStatus.RUNNING,
            input=message.input,
            parent=message.parent,
            base=Base(fields=None, seeds=seeds, at=now),
            created_at=now,
            updated_at=now,
            inputs_applied=record.inputs_applied if record else 0,
            delivery=record.delivery.model_copy(deep=True) if record else Delivery(),
        )
        try:
            live = self._new_live(new, definition, None, Mode.LIVE)
            new.fields = live.snapshot_fields()
        except Exception as exc:  # user __init__ failed or left unserialisable fields
            return reject("init_failed", f"{definition.name}() failed: {type(exc).__name__}: {exc}")
        writer = TurnWriter(self, new, message.message_id, now)
        writer.updates.append(status_update(new, record.status if record else None, message.message_id, now))
        return writer.start(live, seeds)

    def _new_live(self, record: AgentRecord, definition: AgentDefinition, fields: Any, mode: Mode) -> LiveAgent:
        base = record.base
        assert base is not None
        return LiveAgent(
            definition,
            identity_of(record, self.config.task_queue),
            fields,
            next_seq=base.next_seq,
            draws=base.draws,
            mode=mode,
            continue_as_new_after=self.config.continue_as_new_after,
        )

    def _event(
        self, record: AgentRecord, message: SendEvent, now: datetime, live: LiveAgent | None
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        try:
            definition = self._definition(record.agent_type)
        except UnknownAgentTypeError as exc:
            return TurnOutcome.rejected(record, "unknown_agent_type", str(exc)), live
        event = definition.events.get(message.event)
        if event is None:
            known = ", ".join(sorted(definition.events)) or "none"
            return TurnOutcome.rejected(
                record, "unknown_event", f"agent type {definition.name} has no event {message.event!r}; its events: {known}"
            ), live
        try:
            if event.parameter is not None:
                event.parameter.arguments(message.payload)
        except ValidationError as exc:
            return TurnOutcome.rejected(
                record, "invalid_payload", f"event {message.event!r}: {_validation_message(exc)}"
            ), live
        entry = JournalEntry(kind="event", at=now, message_id=message.message_id, name=message.event, payload=message.payload)
        return self._turn(record, entry, now, live)

    def _step_result(
        self, record: AgentRecord, message: StepResult, now: datetime, live: LiveAgent | None
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        step = record.steps.get(message.step_id)
        if step is None or step.attempt != message.attempt:
            return TurnOutcome(record=record, ignored=True), live  # late, duplicate or superseded
        new = record.evolve(steps=dict(record.steps), timers=dict(record.timers))
        final, fact = steps.on_result(new, step, message, now)
        if final is None:
            new.updated_at = now
            return TurnOutcome(record=new, facts=TurnFacts(steps=[fact])), live
        entry = JournalEntry(kind="step", at=now, message_id=message.message_id, seq=step.seq, outcome=final)
        outcome, live = self._turn(record, entry, now, live)
        outcome.facts.steps.append(fact)
        return outcome, live

    def _timer(
        self, record: AgentRecord, message: TimerFired, now: datetime, live: LiveAgent | None
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        if message.timer_id not in record.timers:
            return TurnOutcome(record=record, ignored=True), live  # fired already, or no longer needed
        purpose, _, seq_text = message.timer_id.partition(":")
        step = record.steps.get(seq_text)
        if purpose == "t":
            entry = JournalEntry(kind="timer", at=now, message_id=message.message_id, seq=int(seq_text))
            return self._turn(record, entry, now, live)
        if purpose == "retry" and step is not None:
            new = record.evolve(timers=dict(record.timers))
            del new.timers[message.timer_id]
            new.updated_at = now
            return TurnOutcome(record=new, commands=[steps.command_for(new, step)]), live
        if purpose == "s2c" and step is not None:
            final, fact = steps.timed_out(step, now)
            entry = JournalEntry(kind="step", at=now, message_id=message.message_id, seq=step.seq, outcome=final)
            outcome, live = self._turn(record, entry, now, live)
            outcome.facts.steps.append(fact)
            return outcome, live
        return TurnOutcome(record=record, ignored=True), live

    def _child_result(
        self, record: AgentRecord, message: ChildCompleted, now: datetime, live: LiveAgent | None
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        child = record.children.get(str(message.seq))
        if child is None or child.done or child.run_id != message.child_run_id:
            return TurnOutcome(record=record, ignored=True), live
        if not child.awaited:
            new = record.evolve(children=dict(record.children))
            new.children[str(message.seq)] = child.model_copy(update={"done": True})
            return TurnOutcome(record=new), live
        ok = message.status is AgentStatus.COMPLETED
        outcome = Outcome(
            ok=ok, value=message.result, error_type=None if ok else message.status.value, message=message.error
        )
        entry = JournalEntry(kind="child", at=now, message_id=message.message_id, seq=message.seq, outcome=outcome)
        return self._turn(record, entry, now, live)

    def _cancel(self, record: AgentRecord, message: CancelAgent, now: datetime) -> TurnOutcome:
        new = record.evolve(steps={}, timers={})
        new.error = message.reason
        writer = TurnWriter(self, new, message.message_id, now)
        writer.end(AgentStatus.CANCELLED, None, message.reason, cancel_children=message.cancel_children)
        return writer.outcome()

    # -- turns -------------------------------------------------------------------------

    def _turn(
        self, record: AgentRecord, entry: JournalEntry, now: datetime, live: LiveAgent | None
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        if live is None or live.revision != record.revision or live.identity.run_id != record.run_id:
            try:
                live = replay(record, self._definition(record.agent_type), self.config.task_queue,
                              self.config.continue_as_new_after)
            except (NondeterminismError, UnknownAgentTypeError) as exc:
                raise _ReplayFailed(exc) from exc
        live.begin_turn(now, len(record.journal) + 1)
        if not deliver(live, entry):
            return TurnOutcome(record=record, ignored=True), live
        live.drain()
        # No copy of the fields: the writer replaces them with the live agent's snapshot.
        writer = TurnWriter(self, record.evolve(fields=record.fields), entry.message_id, now)
        return writer.after_turn(live, entry)

    def _park(self, record: AgentRecord, now: datetime, exc: Exception) -> TurnOutcome:
        """Replay disagreed with the journal: the agent is stuck until its code is fixed."""
        new = record.evolve()
        new.status = AgentStatus.STUCK
        new.error = f"{type(exc).__name__}: {exc}"
        new.updated_at = now
        log.error("agent stuck", extra={"agent_id": record.agent_id, "run_id": record.run_id, "error": new.error})
        outcome = TurnOutcome(record=new, updates=[status_update(new, record.status, f"stuck:{record.revision}", now)])
        outcome.facts.nondeterminism = isinstance(exc, NondeterminismError)
        return outcome

    def _blocked(self, record: AgentRecord | None, message: Input, now: datetime) -> TurnOutcome:
        reason = (
            f"a turn took longer than {self.config.turn_timeout_s}s: the agent's code blocked the event loop "
            "(do blocking work in a step); the input is parked until the agent is fixed"
        )
        if record is None or record.status in TERMINAL:
            outcome = TurnOutcome.rejected(record, "turn_timeout", reason)
            if isinstance(message, ScheduleAgent) and message.parent is not None:
                outcome.messages.append(TurnWriter.child_failed_to_start(message, reason))
            return outcome
        outcome = self._park(record.evolve(parked=[*record.parked, _parkable(message)]), now, TimeoutError(reason))
        outcome.facts.blocked = True
        return outcome

    def _stuck_input(self, record: AgentRecord, message: Input, now: datetime) -> tuple[TurnOutcome, LiveAgent | None]:
        """Park inputs of a stuck agent; once per process, first try whether its code replays now."""
        if record.agent_id not in self._unstick_tried:
            self._unstick_tried.add(record.agent_id)
            try:
                live = replay(record, self._definition(record.agent_type), self.config.task_queue,
                              self.config.continue_as_new_after)
            except (NondeterminismError, UnknownAgentTypeError):
                live = None
            if live is not None:
                return self._unstick(record, message, now, live)
        if len(record.parked) >= self.config.max_parked:
            return TurnOutcome.rejected(record, "agent_stuck", f"agent {record.agent_id!r} is stuck: {record.error}"), None
        new = record.evolve(parked=[*record.parked, _parkable(message)], updated_at=now)
        return TurnOutcome(record=new), None

    def _unstick(
        self, record: AgentRecord, message: Input, now: datetime, live: LiveAgent
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        current = record.evolve(status=AgentStatus.RUNNING, error=None, parked=[])
        total = TurnOutcome(record=current, updates=[status_update(current, AgentStatus.STUCK, f"unstuck:{record.revision}", now)])
        pending: list[Input] = [_input_adapter.validate_python(p) for p in record.parked] + [message]
        current_live: LiveAgent | None = live
        for item in pending:
            outcome, current_live = self.apply_now(total.record, item, now, current_live)
            if outcome.rejection is None and outcome.record is not None:
                total.record = outcome.record
            total.updates += outcome.updates
            total.commands += outcome.commands
            total.messages += outcome.messages
        return total, current_live


class _ReplayFailed(Exception):
    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _parkable(message: Input) -> dict[str, Any]:
    return message.model_dump(mode="json")

