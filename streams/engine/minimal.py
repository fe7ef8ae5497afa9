"""A first engine: schedules, named events and cancels, applied to an agent's fields.

It runs `@agent.event` handlers that finish without waiting on anything durable and
keeps every event in order. The durable engine (run, steps, timers, children, replay)
replaces it behind the same `Engine` interface.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from agentstream.agents._registry import AgentDefinition, agent_definition
from agentstream.agents.exceptions import UnknownAgentTypeError
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

from .base import Input, TurnOutcome
from .record import AgentRecord, Delivery, ReceivedEvent

TERMINAL = {AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.CANCELLED}


class HandlerSuspended(Exception):
    """The handler awaited something that only the durable engine can resolve."""


def run_to_completion(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise HandlerSuspended("event handlers may not await durable operations yet")


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:5]
    )


class MinimalEngine:
    def __init__(self, lookup: Callable[[str], AgentDefinition] = agent_definition) -> None:
        self._lookup = lookup

    def apply(self, record: AgentRecord | None, message: Input, now: datetime) -> TurnOutcome:
        if isinstance(message, ScheduleAgent):
            return self._schedule(record, message, now)
        if record is None:
            return TurnOutcome.rejected(
                None,
                "agent_not_found",
                f"agent {message.agent_id!r} was never scheduled; schedule it before sending it inputs",
            )
        if isinstance(message, StepResult):
            return TurnOutcome(record=record, ignored=True)  # this engine issues no steps
        if record.status in TERMINAL:
            return TurnOutcome.rejected(
                record,
                "agent_not_running",
                f"agent {record.agent_id!r} is {record.status.value}; it takes no more inputs",
            )
        if getattr(message, "run_id", None) not in (None, record.run_id):
            return TurnOutcome.rejected(
                record,
                "run_mismatch",
                f"input is for run {message.run_id} but agent {record.agent_id!r} runs {record.run_id}",  # type: ignore[union-attr]
            )
        if isinstance(message, CancelAgent):
            new = record.model_copy(deep=True)
            new.error = message.reason
            return self._transition(new, AgentStatus.CANCELLED, message.message_id, now)
        assert isinstance(message, SendEvent)
        return self._event(record, message, now)

    def _schedule(self, record: AgentRecord | None, message: ScheduleAgent, now: datetime) -> TurnOutcome:
        if record is not None and record.status not in TERMINAL:
            return TurnOutcome.rejected(
                record,
                "already_running",
                f"agent {message.agent_id!r} is already running as {record.agent_type}; "
                "cancel it first or pick another agent ID",
            )
        try:
            definition = self._lookup(message.agent_type)
        except UnknownAgentTypeError as exc:
            return TurnOutcome.rejected(record, "unknown_agent_type", str(exc))
        try:
            if definition.run_parameter is not None:
                definition.run_parameter.validate(message.input)
            instance = definition.cls()
            fields = to_jsonable_python(vars(instance))
        except ValidationError as exc:
            return TurnOutcome.rejected(
                record, "invalid_input", f"input of {definition.name}: {_validation_message(exc)}"
            )
        except Exception as exc:  # user __init__ failed or left unserialisable fields
            return TurnOutcome.rejected(
                record, "init_failed", f"{definition.name}() failed: {type(exc).__name__}: {exc}"
            )
        new = AgentRecord(
            agent_id=message.agent_id,
            agent_type=definition.name,
            run_id=run_id_for(message.message_id),
            status=AgentStatus.RUNNING,
            input=message.input,
            fields=fields,
            created_at=now,
            updated_at=now,
            delivery=record.delivery.model_copy(deep=True) if record else Delivery(),
        )
        previous = record.status if record else None
        return TurnOutcome(record=new, updates=[_status_update(new, previous, message.message_id, now)])

    def _event(self, record: AgentRecord, message: SendEvent, now: datetime) -> TurnOutcome:
        try:
            definition = self._lookup(record.agent_type)
        except UnknownAgentTypeError as exc:
            return TurnOutcome.rejected(record, "unknown_agent_type", str(exc))
        event = definition.events.get(message.event)
        if event is None:
            known = ", ".join(sorted(definition.events)) or "none"
            return TurnOutcome.rejected(
                record,
                "unknown_event",
                f"agent type {definition.name} has no event {message.event!r}; its events: {known}",
            )
        try:
            args = [] if event.parameter is None else [event.parameter.validate(message.payload)]
        except ValidationError as exc:
            return TurnOutcome.rejected(
                record, "invalid_payload", f"event {message.event!r}: {_validation_message(exc)}"
            )
        new = record.model_copy(deep=True)
        received = ReceivedEvent(
            name=message.event, payload=message.payload, message_id=message.message_id, received_at=now
        )
        instance: Any = object.__new__(definition.cls)
        instance.__dict__.update(copy.deepcopy(record.fields))
        try:
            # Through the class: a field may share the handler's name (`self.end` and `end()`).
            handler = getattr(definition.cls, event.method_name)
            result = run_to_completion(handler(instance, *args))
            new.fields = to_jsonable_python(vars(instance))
            received.result = to_jsonable_python(result, fallback=repr)
        except Exception as exc:  # the handler's failure is the event's outcome, not the processor's
            received.error = f"{type(exc).__name__}: {exc}"
        new.events.append(received)
        new.updated_at = now
        return TurnOutcome(record=new)

    @staticmethod
    def _transition(record: AgentRecord, status: AgentStatus, message_id: str, now: datetime) -> TurnOutcome:
        previous = record.status
        record.status = status
        record.updated_at = now
        return TurnOutcome(record=record, updates=[_status_update(record, previous, message_id, now)])


def _status_update(
    record: AgentRecord, previous: AgentStatus | None, message_id: str, now: datetime
) -> AgentUpdate:
    return AgentUpdate(
        message_id=derived_message_id(message_id, "update"),
        agent_id=record.agent_id,
        agent_type=record.agent_type,
        run_id=record.run_id,
        status=record.status,
        previous_status=previous,
        result=record.result,
        error=record.error,
        sent_at=now,
    )
