"""Turn what an agent's code did in one turn into its new record and records to send."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from agentstream.agents._context import ContinueAsNew
from agentstream.topics import (
    AgentStatus,
    AgentUpdate,
    CancelAgent,
    ChildCompleted,
    ParentRef,
    ScheduleAgent,
    SendEvent,
    StreamEvent,
    derived_message_id,
    run_id_for,
)

from . import steps
from .base import TurnFacts, TurnOutcome
from .commands import Cancel, ChildCall, Command, EmitCall, SendCall, StepCall, TimerCall
from .record import FORMAT, AgentRecord, Base, ChildState, JournalEntry, ReceivedEvent, Seed
from .replay import try_compact
from .runtime import LiveAgent, Mode, utc

if TYPE_CHECKING:
    from .durable import EngineConfig

MAX_RESTARTS_PER_TURN = 100
MAX_SHOWN_PAYLOAD_BYTES = 1024  # recent events keep larger payloads only as their size


def status_update(record: AgentRecord, previous: AgentStatus | None, cause: str, now: datetime) -> AgentUpdate:
    return AgentUpdate(
        message_id=derived_message_id(cause, f"update:{record.run_id}:{record.status.value}"),
        agent_id=record.agent_id,
        agent_type=record.agent_type,
        run_id=record.run_id,
        status=record.status,
        previous_status=previous,
        result=record.result,
        error=record.error,
        sent_at=now,
    )


def child_schedule(record: AgentRecord, command: ChildCall) -> ScheduleAgent:
    return ScheduleAgent(
        message_id=command.message_id, agent_id=command.agent_id, agent_type=command.agent_type,
        input=command.input, parent=ParentRef(agent_id=record.agent_id, run_id=record.run_id, seq=command.seq),
    )


def report_to_parent(record: AgentRecord) -> ChildCompleted:
    parent = record.parent
    assert parent is not None
    return ChildCompleted(
        message_id=derived_message_id(record.run_id, "child-result"),
        agent_id=parent.agent_id,
        run_id=parent.run_id,
        seq=parent.seq,
        child_id=record.agent_id,
        # the run the parent started, which it knows the child by (also after continue-as-new)
        child_run_id=run_id_for(record.origin) if record.origin else record.run_id,
        status=record.status,
        result=record.result,
        error=record.error,
    )


class TurnWriter:
    """Collects the new record and the records to publish for one turn.

    `fresh` builds a live agent for a record whose run starts anew (continue-as-new).
    """

    def __init__(
        self,
        record: AgentRecord,
        cause: str,
        now: datetime,
        *,
        config: "EngineConfig",
        fresh: Callable[[AgentRecord], LiveAgent],
    ) -> None:
        self.config = config
        self.fresh = fresh
        self.now = now
        self.cause = cause
        # The caller's record stays untouched: copy the containers this turn may change.
        record.steps, record.timers = dict(record.steps), dict(record.timers)
        record.children, record.events = dict(record.children), list(record.events)
        self.record = record
        self.updates: list[AgentUpdate] = []
        self.commands: list[Any] = []
        self.messages: list[Any] = []
        self.stream: list[StreamEvent] = []
        self.facts = TurnFacts()

    def outcome(self) -> TurnOutcome:
        self.facts.journal_length = len(self.record.journal)
        return TurnOutcome(
            record=self.record, updates=self.updates, commands=self.commands, messages=self.messages,
            stream=self.stream, facts=self.facts,
        )

    # -- entry points ------------------------------------------------------------------

    def start(self, live: LiveAgent, seeds: list[Seed]) -> tuple[TurnOutcome, LiveAgent | None]:
        """The first turn of a run: start its seeds on the base."""
        live.begin_turn(self.now, 0)
        for seed in seeds:
            live.start(seed)
        live.drain()
        assert self.record.base is not None
        self.record.base.commands = [command.descriptor for command in live.issued]
        return self._settle(live)

    def after_turn(self, live: LiveAgent, entry: JournalEntry) -> tuple[TurnOutcome, LiveAgent | None]:
        record = self.record
        record.journal = [*record.journal, entry.model_copy(update={"commands": [c.descriptor for c in live.issued]})]
        if entry.kind == "event":
            record.events.append(_received(entry, self.now))
            del record.events[: -self.config.recent_events]
        elif entry.kind == "step":
            steps.forget_step(record, entry.seq or 0)
        elif entry.kind == "timer":
            record.timers.pop(f"t:{entry.seq}", None)
        elif entry.kind == "child":
            record.children.pop(str(entry.seq), None)  # done: nothing left to remember
        return self._settle(live)

    @staticmethod
    def child_failed_to_start(message: ScheduleAgent, reason: str) -> ChildCompleted:
        parent = message.parent
        assert parent is not None
        return ChildCompleted(
            message_id=derived_message_id(message.message_id, "child-rejected"),
            agent_id=parent.agent_id,
            run_id=parent.run_id,
            seq=parent.seq,
            child_id=message.agent_id,
            child_run_id=run_id_for(message.message_id),
            status=AgentStatus.FAILED,
            error=f"the child could not start: {reason}",
        )

    # -- the rest of a turn ----------------------------------------------------------

    def _settle(self, live: LiveAgent) -> tuple[TurnOutcome, LiveAgent | None]:
        record = self.record
        current = live
        for _ in range(MAX_RESTARTS_PER_TURN):
            try:
                record.fields = current.snapshot_fields()
            except PydanticSerializationError as exc:
                self.end(AgentStatus.FAILED, None, f"the agent's fields cannot be saved as JSON: {exc}")
                return self.outcome(), None
            restart = self._finish_seeds(current)
            if restart is None:
                break
            current = self._continue_as_new(restart.agent_input, current)
        else:
            self.end(AgentStatus.FAILED, None, f"run continued as new {MAX_RESTARTS_PER_TURN} times in one turn")
            return self.outcome(), None
        self._apply(current.issued)
        if record.status is not AgentStatus.RUNNING:
            return self.outcome(), None
        record.revision += 1
        record.updated_at = self.now
        if current.is_quiescent():
            compacted = try_compact(record, current, self.now)
            self.facts.compacted = compacted is not None
            self.facts.compaction_refused = compacted is None
            current = compacted or current
        current.revision = record.revision
        record.waiting = current.waits()
        record.format = FORMAT  # it may now hold what an older format does not have
        return self.outcome(), current

    def _finish_seeds(self, live: LiveAgent) -> ContinueAsNew | None:
        for seed, task in live.finished_seeds():
            error = None if task.cancelled() else task.exception()
            if seed.kind == "event":
                self._event_done(seed, task, error)
                continue
            if task.cancelled():
                self.end(AgentStatus.CANCELLED, None, "run was cancelled")
            elif isinstance(error, ContinueAsNew):
                return error
            elif error is not None:
                self.end(AgentStatus.FAILED, None, f"{type(error).__name__}: {error}")
            else:
                self.end(AgentStatus.COMPLETED, to_jsonable_python(task.result(), fallback=repr), None)
        return None

    def _event_done(self, seed: Seed, task: Any, error: BaseException | None) -> None:
        for index in range(len(self.record.events) - 1, -1, -1):
            received = self.record.events[index]
            if received.message_id != seed.message_id:
                continue
            if task.cancelled():
                update: dict[str, Any] = {"error": "CancelledError: the handler was cancelled"}
            elif isinstance(error, ContinueAsNew):
                update = {"error": "agent_continue_as_new() can only end run, not an event handler"}
            elif error is not None:
                update = {"error": f"{type(error).__name__}: {error}"}
            else:
                update = {"result": to_jsonable_python(task.result(), fallback=repr)}
            self.record.events[index] = received.model_copy(update={**update, "done": True})
            return

    def _continue_as_new(self, new_input: Any, previous: LiveAgent) -> LiveAgent:
        """Restart run in place: same agent, fields kept, a new run with an empty journal."""
        record = self.record
        for index, received in enumerate(record.events):
            if not received.done:
                record.events[index] = received.model_copy(
                    update={"done": True, "error": "dropped: run continued as new while the handler waited"}
                )
        record.run_id = derived_message_id(record.run_id, "continue-as-new")
        if new_input is not None:
            record.input = new_input
        seed = Seed(kind="run", payload=record.input)
        record.base = Base(fields=previous.base_fields(record.fields), seeds=[seed], at=self.now)
        record.journal, record.steps, record.timers, record.children = [], {}, {}, {}
        self.updates.append(status_update(record, AgentStatus.RUNNING, self.cause, self.now))
        live = self.fresh(record)
        live.begin_turn(self.now, 0)
        live.start(seed)
        live.drain()
        record.base.commands = [command.descriptor for command in live.issued]
        return live

    def _apply(self, issued: list[Command]) -> None:
        record, now = self.record, self.now
        for command in issued:
            if isinstance(command, StepCall):
                step = steps.new_step(command.seq, command.function, command.input, command.options,
                                      self.config.task_queue, now)
                self.commands.append(steps.send_attempt(record, step, now))
                deadline = steps.deadline_timer(step)
                if deadline is not None:
                    record.timers[deadline[0]] = deadline[1]
            elif isinstance(command, TimerCall):
                record.timers[f"t:{command.seq}"] = utc(command.fire_at)
            elif isinstance(command, ChildCall):
                record.children[str(command.seq)] = ChildState(
                    agent_id=command.agent_id, run_id=run_id_for(command.message_id), agent_type=command.agent_type,
                    awaited=command.wait,
                )
                self.messages.append(child_schedule(record, command))
            elif isinstance(command, EmitCall):
                self._emit(command)
            elif isinstance(command, SendCall):
                self.messages.append(_sent(record, command))
            elif isinstance(command, Cancel):
                steps.forget_step(record, command.seq)
                record.timers.pop(f"t:{command.seq}", None)
                awaited = record.children.get(str(command.seq))
                if awaited is not None:  # the code stopped waiting for this child
                    record.children[str(command.seq)] = awaited.model_copy(update={"awaited": False})

    def _emit(self, command: EmitCall) -> None:
        record = self.record
        event = StreamEvent(
            agent_id=record.agent_id, run_id=record.run_id, step_id=None, attempt=None, seq=command.seq,
            type=command.type, data=command.data,  # type: ignore[arg-type]  # checked by agent.emit's signature
        )
        self.stream.append(event)
        if command.update:
            self.updates.append(AgentUpdate(
                message_id=derived_message_id(event.message_id, "update"),
                agent_id=record.agent_id, agent_type=record.agent_type, run_id=record.run_id,
                status=record.status, previous_status=record.status,
                notice={"type": command.type, "data": command.data}, sent_at=self.now,
            ))

    def end(self, status: AgentStatus, result: Any, error: str | None, *, cancel_children: bool = False) -> None:
        record = self.record
        previous = record.status
        record.status, record.result, record.error = status, result, error
        record.steps, record.timers, record.waiting = {}, {}, []
        record.updated_at = self.now
        self.updates.append(status_update(record, previous, self.cause, self.now))
        if record.parent is not None:
            self.messages.append(report_to_parent(record))
        if cancel_children:
            for child in record.children.values():
                if not child.done:
                    self.messages.append(CancelAgent(
                        message_id=derived_message_id(self.cause, f"cancel:{child.agent_id}"),
                        agent_id=child.agent_id,
                        run_id=child.run_id,
                        reason=f"parent {record.agent_id} was cancelled",
                        cancel_children=True,
                    ))


def _sent(record: AgentRecord, command: SendCall) -> SendEvent | ScheduleAgent:
    """The record `agent.send` / `agent.ensure_started` asked for.

    A schedule's message ID depends only on the target and its type, so every agent that
    ensures the same agent sends the very same schedule: the first starts it, the others
    are recognised as that schedule again and ignored.
    """
    if command.kind == "schedule":
        return ScheduleAgent(
            message_id=derived_message_id(f"{command.name}/{command.agent_id}", "ensure-started"),
            agent_id=command.agent_id, agent_type=command.name, input=command.payload,
        )
    return SendEvent(
        message_id=derived_message_id(record.run_id, f"send:{command.seq}"),
        agent_id=command.agent_id, event=command.name, payload=command.payload,
    )


def _received(entry: JournalEntry, now: datetime) -> ReceivedEvent:
    """The API's view of an event: its payload only while small (the journal keeps it whole)."""
    size = len(json.dumps(entry.payload))
    shown = entry.payload if size <= MAX_SHOWN_PAYLOAD_BYTES else None
    return ReceivedEvent(
        name=entry.name or "", payload=shown, payload_bytes=None if shown is not None or entry.payload is None else size,
        message_id=entry.message_id, received_at=now, done=False,
    )
