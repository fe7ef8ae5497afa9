"""The durable engine: runs agents' code turn by turn, with a journal to replay it.

`apply` is total (Temporal's "an activation never raises"): whatever happens — bad
input, agent code that no longer fits its journal, a field that no longer validates,
a bug here — the input ends in exactly one outcome (DESIGN.md guarantee 7): applied,
ignored, a duplicate, dead-lettered with a reason, or parked with its agent (`stuck`).

The engine is the one author of an agent's record: it de-duplicates the input
(dedup.py), runs the turn within a time limit (code that blocks is reported, not waited
for: inline_turns.py, turn_thread.py), and seals the result (seal.py): delivery bookkeeping, the
outbox of records to publish, the size limit, the bytes to store.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from agentstream.agents._registry import AgentDefinition, agent_definition
from agentstream.agents.exceptions import UnknownAgentTypeError
from agentstream.topics import (
    AgentStatus,
    CancelAgent,
    ChildCompleted,
    ScheduleAgent,
    SendEvent,
    StepProgress,
    StepResult,
    TimerFired,
    run_id_for,
)

from . import dedup, steps
from .base import Input, Origin, Rejection, TurnFacts, TurnOutcome
from .dedup import DedupPolicy
from .inline_turns import InlineTurns, inline_available
from .local_steps import LocalSteps, run_local_steps
from .record import AgentRecord, Base, JournalEntry, Outcome, Seed
from .replay import deliver, identity_of, replay
from .runtime import LiveAgent, Mode
from .seal import Sealer
from .turn import TurnWriter, status_update
from .turn_thread import TurnThread, TurnTimedOut

log = logging.getLogger("agentstream.engine")

TERMINAL = {AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.CANCELLED}
_input_adapter: TypeAdapter[Input] = TypeAdapter(Input)


@dataclass(frozen=True)
class EngineConfig:
    task_queue: str = "restack"
    turn_timeout_s: float = 5.0
    # "inline": on the event loop's thread, interrupted past the limit (inline_turns.py);
    # "thread": on a thread of their own, abandoned past it (turn_thread.py)
    turns: Literal["inline", "thread"] = "inline"
    continue_as_new_after: int = 2000
    recent_events: int = 100
    cache_size: int = 10_000
    max_parked: int = 1_000
    # Kafka's default message.max.bytes is 1 MiB; a record must fit one changelog message.
    max_record_bytes: int = 900_000
    dedup: DedupPolicy = field(default_factory=DedupPolicy)
    identity: str = "agentstream"  # `rejected_by` of the dead letters this engine writes


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:5])


class DurableEngine:
    def __init__(
        self,
        config: EngineConfig | None = None,
        lookup: Callable[[str], AgentDefinition] = agent_definition,
        local_steps: LocalSteps | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self._lookup = lookup
        self._local_steps = local_steps  # without it, a local step goes to a worker like any other
        self._cache: OrderedDict[str, LiveAgent] = OrderedDict()
        self._thread = TurnThread(self.config.turn_timeout_s)  # its thread starts with its first work
        self._inline = InlineTurns(self.config.turn_timeout_s) if self.config.turns == "inline" else None
        self._unstick_tried: set[str] = set()
        self._sealer = Sealer(self.config)

    # -- the entry point -----------------------------------------------------------------

    async def apply(
        self, record: AgentRecord | None, message: Input, now: datetime, origin: Origin | None = None
    ) -> TurnOutcome:
        source, offset = (origin.source, origin.offset) if origin is not None else (None, None)
        seen = dedup.seen_before(record, message, source, offset, now, self.config.dedup)
        if seen is not None:
            assert record is not None
            return self._sealer.duplicate(record, source, offset, redelivered=seen == "redelivery")
        try:
            outcome = await self._run(record, message, now)
            if self._local_steps is not None and outcome.commands:
                outcome = await run_local_steps(
                    outcome, self._local_steps, lambda current, result: self._guarded_turn(current, result, now)
                )
        except Exception as exc:  # a bug here must not lose the input: park its agent
            log.exception("engine failed on an input", extra={"agent_id": message.agent_id})
            self.forget(message.agent_id)
            outcome = self._failed(record, message, now, exc)
        sealed = self._sealer.seal(record, message, now, origin, outcome)
        if sealed.facts.too_large:  # what the live agent ran was not recorded: start from the record again
            self.forget(message.agent_id)
        elif sealed.record is not None and sealed.record.status is not AgentStatus.STUCK:
            self._unstick_tried.discard(message.agent_id)  # running again: a later park is a new episode
        return sealed

    def undeliverable(self, record: AgentRecord, reason: str, now: datetime) -> TurnOutcome:
        """The record's outbox cannot be published: park the agent and keep the outbox to retry."""
        self.forget(record.agent_id)
        return self._sealer.undeliverable(record, reason, now)

    def forget(self, agent_id: str) -> None:
        """Drop what this process holds for the agent: its next input starts from its record."""
        self._cache.pop(agent_id, None)
        self._unstick_tried.discard(agent_id)

    def close(self) -> None:
        self._thread.close()

    async def _run(self, record: AgentRecord | None, message: Input, now: datetime) -> TurnOutcome:
        if (
            record is not None
            and record.status is AgentStatus.STUCK
            and record.agent_id not in self._unstick_tried
            and not isinstance(message, CancelAgent)
        ):
            self._unstick_tried.add(record.agent_id)
            unstuck = await self._unstick(record, message, now)
            if unstuck is not None:
                return unstuck
        return await self._guarded_turn(record, message, now)

    async def _guarded(self, work: Callable[[], Any]) -> Any:
        """Run `work` (agent code) within the time limit: inline on the main thread, else on the turn
        thread (where the limit counts from when it starts there). Raises `TurnTimedOut` past it."""
        if self._inline is not None and inline_available():
            return self._inline.call(work)
        return await self._thread.run(work)

    async def _guarded_turn(self, record: AgentRecord | None, message: Input, now: datetime) -> TurnOutcome:
        # Live state leaves the cache for the turn: a turn that overruns never puts it back.
        live = self._cache.pop(message.agent_id, None)
        try:
            outcome, live = await self._guarded(lambda: self.apply_now(record, message, now, live))
        except TurnTimedOut:
            return self._blocked(record, message, now)
        if live is not None:
            self._cache[message.agent_id] = live
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return outcome  # type: ignore[no-any-return]

    # -- dispatch (runs guarded: inline or on the turn thread) -------------------------

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
            return self._stuck_input(record, message, now), None
        if isinstance(message, SendEvent):
            return self._event(record, message, now, live)
        if isinstance(message, StepResult):
            return self._step_result(record, message, now, live)
        if isinstance(message, StepProgress):
            return self._progress(record, message, now), live
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

        if record is not None and dedup.own_schedule(record, message):
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
            origin=message.message_id,
            status=AgentStatus.RUNNING,
            input=message.input,
            parent=message.parent,
            base=Base(fields=None, seeds=seeds, at=now),
            created_at=now,
            updated_at=now,
            inputs_applied=record.inputs_applied if record else 0,
            delivery=record.delivery.independent_copy() if record else dedup.Delivery(),
        )
        try:
            live = self._new_live(new, definition, None)
            new.fields = live.snapshot_fields()
        except Exception as exc:  # user __init__ failed or left unserialisable fields
            return reject("init_failed", f"{definition.name}() failed: {type(exc).__name__}: {exc}")
        writer = self._writer(new, message.message_id, now)
        writer.updates.append(status_update(new, record.status if record else None, message.message_id, now))
        return writer.start(live, seeds)

    def _new_live(self, record: AgentRecord, definition: AgentDefinition, fields: Any) -> LiveAgent:
        base = record.base
        assert base is not None
        return LiveAgent(
            definition,
            identity_of(record, self.config.task_queue),
            fields,
            next_seq=base.next_seq,
            draws=base.draws,
            mode=Mode.LIVE,
            continue_as_new_after=self.config.continue_as_new_after,
        )

    def _writer(self, record: AgentRecord, cause: str, now: datetime) -> TurnWriter:
        def fresh(restarted: AgentRecord) -> LiveAgent:
            assert restarted.base is not None  # a new run restarts from its base, types included
            return self._new_live(restarted, self._definition(restarted.agent_type), restarted.base.fields)

        return TurnWriter(record, cause, now, config=self.config, fresh=fresh)

    def _check_event(self, record: AgentRecord, message: SendEvent) -> Rejection | None:
        """Whether the agent's type takes this event with this payload."""
        try:
            definition = self._definition(record.agent_type)
        except UnknownAgentTypeError as exc:
            return Rejection("unknown_agent_type", str(exc))
        event = definition.events.get(message.event)
        if event is None:
            known = ", ".join(sorted(definition.events)) or "none"
            return Rejection(
                "unknown_event", f"agent type {definition.name} has no event {message.event!r}; its events: {known}"
            )
        try:
            if event.parameter is not None:
                event.parameter.arguments(message.payload)
        except ValidationError as exc:
            return Rejection("invalid_payload", f"event {message.event!r}: {_validation_message(exc)}")
        return None

    def _event(
        self, record: AgentRecord, message: SendEvent, now: datetime, live: LiveAgent | None
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        rejection = self._check_event(record, message)
        if rejection is not None:
            return TurnOutcome(record=record, rejection=rejection), live
        entry = JournalEntry(kind="event", at=now, message_id=message.message_id, name=message.event, payload=message.payload)
        return self._turn(record, entry, now, live)

    def _step_result(
        self, record: AgentRecord, message: StepResult, now: datetime, live: LiveAgent | None
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        step = dedup.current_step(record, message)
        if step is None:
            return TurnOutcome(record=record, ignored=True), live  # late, duplicate, superseded or forged
        new = record.evolve(steps=dict(record.steps), timers=dict(record.timers))
        final, fact = steps.on_result(new, step, message, now)
        if final is None:
            new.updated_at = now
            return TurnOutcome(record=new, facts=TurnFacts(steps=[fact])), live
        entry = JournalEntry(kind="step", at=now, message_id=message.message_id, seq=step.seq, outcome=final)
        outcome, live = self._turn(record, entry, now, live)
        outcome.facts.steps.append(fact)
        return outcome, live

    def _progress(self, record: AgentRecord, message: StepProgress, now: datetime) -> TurnOutcome:
        step = dedup.current_step(record, message)
        if step is None or f"retry:{step.seq}" in record.timers:
            return TurnOutcome(record=record, ignored=True)
        new = record.evolve(steps=dict(record.steps), timers=dict(record.timers), updated_at=now)
        steps.on_progress(new, step, message, now)
        return TurnOutcome(record=new)

    def _timer(
        self, record: AgentRecord, message: TimerFired, now: datetime, live: LiveAgent | None
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        if not dedup.current_timer(record, message, now):
            return TurnOutcome(record=record, ignored=True), live  # stale, early, forged, or fired already
        purpose, _, seq_text = message.timer_id.partition(":")
        step = record.steps.get(seq_text)
        if purpose == "t":
            entry = JournalEntry(kind="timer", at=now, message_id=message.message_id, seq=int(seq_text))
            return self._turn(record, entry, now, live)
        if step is None:
            return TurnOutcome(record=record, ignored=True), live
        new = record.evolve(steps=dict(record.steps), timers=dict(record.timers), updated_at=now)
        if purpose == "retry":
            del new.timers[message.timer_id]
            return TurnOutcome(record=new, commands=[steps.send_attempt(new, step, now)]), live
        final: Outcome | None
        if purpose == "s2c":
            final, fact = steps.timed_out(step, now)
        elif purpose in steps.ATTEMPT_TIMERS:
            final, fact = steps.on_failure(new, step, steps.attempt_timed_out(purpose, step), now)
            if final is None:
                return TurnOutcome(record=new, facts=TurnFacts(steps=[fact])), live
        else:
            return TurnOutcome(record=record, ignored=True), live
        entry = JournalEntry(kind="step", at=now, message_id=message.message_id, seq=step.seq, outcome=final)
        outcome, live = self._turn(record, entry, now, live)
        outcome.facts.steps.append(fact)
        return outcome, live

    def _child_result(
        self, record: AgentRecord, message: ChildCompleted, now: datetime, live: LiveAgent | None
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        child = dedup.current_child(record, message)
        if child is None:
            return TurnOutcome(record=record, ignored=True), live
        if not child.awaited:
            new = record.evolve(children=dict(record.children))
            del new.children[str(message.seq)]
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
        writer = self._writer(new, message.message_id, now)
        writer.end(AgentStatus.CANCELLED, None, message.reason, cancel_children=message.cancel_children)
        return writer.outcome()

    # -- turns -------------------------------------------------------------------------

    def _replay(self, record: AgentRecord) -> LiveAgent:
        try:
            return replay(record, self._definition(record.agent_type), self.config.task_queue,
                          self.config.continue_as_new_after)
        except Exception as exc:  # nondeterminism, a removed handler, a field that no longer validates
            raise _ReplayFailed(exc) from exc

    def _turn(
        self, record: AgentRecord, entry: JournalEntry, now: datetime, live: LiveAgent | None
    ) -> tuple[TurnOutcome, LiveAgent | None]:
        if live is None or live.revision != record.revision or live.identity.run_id != record.run_id:
            live = self._replay(record)
        live.begin_turn(now, len(record.journal) + 1)
        if not deliver(live, entry):
            return TurnOutcome(record=record, ignored=True), live
        live.drain()
        # No copy of the fields: the writer replaces them with the live agent's snapshot.
        writer = self._writer(record.evolve(fields=record.fields), entry.message_id, now)
        return writer.after_turn(live, entry)

    def _park(self, record: AgentRecord, now: datetime, exc: BaseException) -> TurnOutcome:
        """The agent cannot go on with this code: stuck, with the reason, until it is fixed."""
        from agentstream.agents.exceptions import NondeterminismError

        new = record.evolve()
        new.status = AgentStatus.STUCK
        new.error = f"{type(exc).__name__}: {exc}"
        new.updated_at = now
        log.error("agent stuck", extra={"agent_id": record.agent_id, "run_id": record.run_id, "error": new.error})
        outcome = TurnOutcome(record=new, updates=[status_update(new, record.status, f"stuck:{record.revision}", now)])
        outcome.facts.nondeterminism = isinstance(exc, NondeterminismError)
        outcome.label = "parked"
        return outcome

    def _failed(self, record: AgentRecord | None, message: Input, now: datetime, exc: Exception) -> TurnOutcome:
        reason = f"the engine failed on this input: {type(exc).__name__}: {exc}"
        if record is None or record.status in TERMINAL:
            return TurnOutcome.rejected(record, "engine_error", reason)
        return self._park(record.evolve(parked=[*record.parked, _parkable(message)]), now, RuntimeError(reason))

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

    def _stuck_input(self, record: AgentRecord, message: Input, now: datetime) -> TurnOutcome:
        """Park a valid input of a stuck agent; reject what it could never take."""
        if isinstance(message, SendEvent):
            rejection = self._check_event(record, message)
            if rejection is not None:
                return TurnOutcome(record=record, rejection=rejection)
        if len(record.parked) >= self.config.max_parked:
            return TurnOutcome.rejected(
                record, "agent_stuck",
                f"agent {record.agent_id!r} is stuck ({record.error}) and already holds {len(record.parked)} parked "
                f"inputs, the most it keeps; fix its code and restart the processors",
            )
        outcome = TurnOutcome(record=record.evolve(parked=[*record.parked, _parkable(message)], updated_at=now))
        outcome.label = "parked"
        return outcome

    # -- unsticking: after a fix is deployed, parked inputs apply one turn (and time limit) each

    async def _unstick(self, record: AgentRecord, message: Input, now: datetime) -> TurnOutcome | None:
        try:
            live = await self._guarded(lambda: self._replay(record))
        except (TurnTimedOut, _ReplayFailed):
            return None  # still stuck: the input is parked as usual
        current = record.evolve(status=AgentStatus.RUNNING, error=None, parked=[])
        total = TurnOutcome(
            record=current, updates=[status_update(current, AgentStatus.STUCK, f"unstuck:{record.revision}", now)]
        )
        log.info("agent unstuck", extra={"agent_id": record.agent_id, "parked": len(record.parked)})
        self._cache[record.agent_id] = live
        pending: list[Input | dict[str, Any]] = [*record.parked, message]
        for index, item in enumerate(pending):
            try:
                parked = item if not isinstance(item, dict) else _input_adapter.validate_python(item)
            except ValidationError as exc:
                total.dead_letters.append(self._sealer.parked_letter(_as_dict(item), "invalid_parked_input", str(exc)))
                continue
            outcome = await self._guarded_turn(total.record, parked, now)
            total.absorb(outcome)
            if outcome.rejection is not None:
                if item is message:
                    total.rejection = outcome.rejection
                else:
                    total.dead_letters.append(
                        self._sealer.parked_letter(_as_dict(item), outcome.rejection.code, outcome.rejection.reason)
                    )
            elif outcome.record is not None:
                total.record = outcome.record
            assert total.record is not None
            if total.record.status is AgentStatus.STUCK:  # stuck again: the rest stays parked, in order
                total.label = "parked"
                total.facts.blocked = outcome.facts.blocked
                total.facts.nondeterminism = outcome.facts.nondeterminism
                for later in pending[index + 1:]:
                    self._park_again(total, later, message, now)
                break
        return total

    def _park_again(self, total: TurnOutcome, item: Input | dict[str, Any], message: Input, now: datetime) -> None:
        """Keep `item` parked behind an agent that got stuck again, unless it could never apply."""
        assert total.record is not None
        try:
            parsed = item if not isinstance(item, dict) else _input_adapter.validate_python(item)
        except ValidationError as exc:
            total.dead_letters.append(self._sealer.parked_letter(_as_dict(item), "invalid_parked_input", str(exc)))
            return
        outcome = self._stuck_input(total.record, parsed, now)
        if outcome.rejection is None:
            total.record = outcome.record
        elif item is message:
            total.rejection = outcome.rejection
        else:
            total.dead_letters.append(
                self._sealer.parked_letter(_parkable(parsed), outcome.rejection.code, outcome.rejection.reason)
            )


class _ReplayFailed(Exception):
    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _parkable(message: Input) -> dict[str, Any]:
    return message.model_dump(mode="json")


def _as_dict(item: Input | dict[str, Any]) -> dict[str, Any]:
    return item if isinstance(item, dict) else _parkable(item)
