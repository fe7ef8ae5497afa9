"""Versioned JSON envelopes: the wire format of every agentstream record.

Every record value is one JSON object with `v` (format version), `kind` (which
envelope), a unique `message_id` and the `agent_id` that is also the record key.
WIRE.md beside this file documents the format for producers in other languages.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from .exceptions import AgentstreamError, InvalidMessageError

WIRE_VERSION = 1


def new_message_id() -> str:
    return uuid.uuid4().hex


_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes


def derived_message_id(message_id: str, purpose: str) -> str:
    """A message ID that is the same every time the same input produces this output.

    It is `uuid5(NAMESPACE_URL, "agentstream:<id>:<purpose>").hex` (WIRE.md), computed
    without building a `UUID` object: a processor derives several per turn, and `uuid5` was
    4% of its time under load. Equality with `uuid5` is pinned by a property test.
    """
    name = f"agentstream:{message_id}:{purpose}".encode()
    digest = bytearray(hashlib.sha1(_URL_NAMESPACE + name, usedforsecurity=False).digest()[:16])  # an ID, not a secret
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


def run_id_for(schedule_message_id: str) -> str:
    """The run ID of the agent run that a schedule record starts; clients know it up front."""
    return derived_message_id(schedule_message_id, "run")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


AgentId = Annotated[str, Field(min_length=1, max_length=512)]
Name = Annotated[str, Field(min_length=1, max_length=256)]


class Envelope(BaseModel):
    """Fields shared by every record agentstream reads or writes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    message_id: str = Field(default_factory=new_message_id, min_length=1, max_length=256)
    agent_id: AgentId
    sent_at: datetime = Field(default_factory=utc_now)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @property
    def key(self) -> bytes:
        return self.agent_id.encode()


class ParentRef(BaseModel):
    """Which agent started a child, so the child can report its outcome back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_id: AgentId
    run_id: str
    seq: int = Field(ge=1)


class ScheduleAgent(Envelope):
    """Start an agent of `agent_type` under `agent_id` with `input`."""

    kind: Literal["schedule"] = "schedule"
    agent_type: Name
    input: JsonValue = None
    idempotency_key: str | None = None
    parent: ParentRef | None = None  # set when another agent starts this one as its child


class SendEvent(Envelope):
    """Deliver the named event to a running agent."""

    kind: Literal["event"] = "event"
    event: Name
    payload: JsonValue = None
    run_id: str | None = None  # when set, only that run of the agent may take the event
    idempotency_key: str | None = None


class CancelAgent(Envelope):
    """Ask an agent to stop."""

    kind: Literal["cancel"] = "cancel"
    reason: str | None = None
    run_id: str | None = None
    idempotency_key: str | None = None
    cancel_children: bool = False  # also cancel the children it started, and theirs


class TimerFired(Envelope):
    """A durable timer of an agent is due; produced by the processor that owns the agent."""

    kind: Literal["timer"] = "timer"
    run_id: str
    timer_id: str
    fire_at: datetime


class AgentStatus(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STUCK = "stuck"


class ChildCompleted(Envelope):
    """A child agent ended; sent to its parent (the record key is the parent's ID)."""

    kind: Literal["child_result"] = "child_result"
    run_id: str  # the parent's run
    seq: int = Field(ge=1)
    child_id: AgentId
    child_run_id: str
    status: AgentStatus
    result: JsonValue = None
    error: str | None = None


AgentInput = Annotated[
    Union[ScheduleAgent, SendEvent, CancelAgent, TimerFired, ChildCompleted], Field(discriminator="kind")
]
"""What travels on `agent-events`."""


class StepCommand(Envelope):
    """Run `function` once for an agent; sent by processors to `step-commands.<queue>`."""

    kind: Literal["step_command"] = "step_command"
    run_id: str
    step_id: str
    function: Name
    input: JsonValue = None
    attempt: int = Field(1, ge=1)
    task_queue: Name
    start_to_close_timeout_s: float | None = Field(None, gt=0)
    schedule_to_start_timeout_s: float | None = Field(None, gt=0)  # measured from `sent_at`
    heartbeat_timeout_s: float | None = Field(None, gt=0)


class StepError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    message: str
    retryable: bool = True
    retry_after_s: float | None = None


class StepResult(Envelope):
    """The outcome of one attempt of a step; sent by workers to `step-results`."""

    kind: Literal["step_result"] = "step_result"
    run_id: str
    step_id: str
    attempt: int = Field(ge=1)
    function: Name
    ok: bool
    output: JsonValue = None
    error: StepError | None = None
    duration_s: float = Field(0.0, ge=0)
    command_id: str | None = None  # message_id of the StepCommand this answers; the worker sets it


class StepProgress(Envelope):
    """A worker started an attempt of a step, or the function heartbeated; on `step-results`."""

    kind: Literal["step_progress"] = "step_progress"
    run_id: str
    step_id: str
    attempt: int = Field(ge=1)
    function: Name
    event: Literal["started", "heartbeat"]
    command_id: str  # message_id of the StepCommand this attempt runs


def _step_results_kind(value: Any) -> str | None:
    """The `kind` of a step-results record; a record without one is a step_result (its `kind` has a default)."""
    if isinstance(value, dict):
        kind = value.get("kind", "step_result")
        return kind if isinstance(kind, str) else None
    return getattr(value, "kind", None)


StepResultsRecord = Annotated[
    Union[Annotated[StepResult, Tag("step_result")], Annotated[StepProgress, Tag("step_progress")]],
    Discriminator(
        _step_results_kind,
        custom_error_type="invalid_kind",
        custom_error_message="a step-results record is an object whose kind is step_result or step_progress",
    ),
]
"""What travels on `step-results`."""


class AgentUpdate(Envelope):
    """A change of an agent's status, published on `agent-updates`."""

    kind: Literal["agent_update"] = "agent_update"
    agent_type: str
    run_id: str
    status: AgentStatus
    previous_status: AgentStatus | None = None
    result: JsonValue = None
    error: str | None = None
    # A run event the agent emitted with `agent.emit(..., update=True)`, e.g. an approval
    # request: {"type": ..., "data": ...}; the status is then unchanged.
    notice: dict[str, JsonValue] | None = None


StreamEventType = Literal[
    "text_delta",
    "tool_call_delta",
    "tool_call",
    "tool_result",
    "run_started",
    "run_finished",
    "approval_requested",
    "approval_decided",
    "error",
    "superseded",
]


def stream_event_id(run_id: str, step_id: str | None, attempt: int | None, seq: int) -> str:
    """The message ID of a stream event: the same whenever the same attempt emits its seq-th event.

    A null step_id or attempt is written as an empty string; step IDs are never empty and
    attempts are integers, so no two positions share a purpose string.
    """
    return derived_message_id(run_id, f"stream:{step_id or ''}:{'' if attempt is None else attempt}:{seq}")


class StreamEvent(Envelope):
    """A piece of an agent's live output on `agent-stream`: a token delta, tool-call progress, a run event.

    `seq` counts the events of one (run, step, attempt) from 0, so a reader can order
    them and notice a gap. The stream is progress, not the record of what happened: the
    committed step result stays authoritative, and a `superseded` event tells readers to
    drop the partial output of an abandoned attempt.
    """

    kind: Literal["stream_event"] = "stream_event"
    run_id: str
    step_id: str | None = Field(None, min_length=1)  # None: an event of the run, not of one step
    attempt: int | None = Field(None, ge=1)
    seq: int = Field(ge=0)
    type: StreamEventType
    data: JsonValue = None

    @model_validator(mode="before")
    @classmethod
    def _derived_message_id(cls, value: Any) -> Any:
        """Without a message ID the event gets its derived one, so a resent copy keeps its identity."""
        if isinstance(value, dict) and value.get("message_id") is None:
            run_id, step_id, attempt, seq = (value.get(name) for name in ("run_id", "step_id", "attempt", "seq"))
            if (
                isinstance(run_id, str)
                and isinstance(seq, int)
                and (step_id is None or isinstance(step_id, str))
                and (attempt is None or isinstance(attempt, int))
            ):
                return {**value, "message_id": stream_event_id(run_id, step_id, attempt, seq)}
        return value


class InvalidCursorError(AgentstreamError, ValueError):
    """A stream cursor that this version did not hand out (or that was damaged on the way)."""


_CURSOR = re.compile(r"([0-9]{1,9}):([0-9]{1,19})")


def stream_cursor(partition: int, offset: int) -> str:
    """The cursor of the record at `offset` of `partition` of agent-stream: `"<partition>:<offset>"`.

    Clients treat it as opaque and hand it back to resume after that record.
    """
    return f"{partition}:{offset}"


def parse_stream_cursor(cursor: str) -> tuple[int, int]:
    """(partition, offset) of a cursor made by `stream_cursor`; raises `InvalidCursorError`."""
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise InvalidCursorError(
            f"invalid stream cursor {cursor[:80]!r}: expected '<partition>:<offset>' as handed out with an event"
        )
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class StreamItem:
    """One event read from agent-stream and the cursor to resume right after it."""

    cursor: str
    event: StreamEvent


# Every `DeadLetter.reason_code` (WIRE.md "Reason codes" explains each; a test keeps the
# three in step). The decoder's codes are the ones a worker produces too. Metrics start
# every code at 0, so dashboards and alerts see the series before the first rejection.
DECODE_REASON_CODES = ("empty_value", "not_json", "invalid_envelope")
REASON_CODES = (*DECODE_REASON_CODES, "key_mismatch", "agent_not_found", "already_running", "unknown_agent_type",
                "invalid_input", "init_failed", "agent_not_running", "run_mismatch", "unknown_event",
                "invalid_payload", "agent_stuck", "turn_timeout", "record_unreadable", "record_too_large",
                "engine_error", "processor_error", "invalid_parked_input")


class DeadLetter(BaseModel):
    """A rejected record, with why it was rejected and where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    kind: Literal["dead_letter"] = "dead_letter"
    message_id: str = Field(default_factory=new_message_id)
    reason_code: str
    reason: str
    source_topic: str
    partition: int
    offset: int
    key: str | None
    key_encoding: Literal["utf-8", "base64"] = "utf-8"
    value: str
    value_encoding: Literal["utf-8", "base64"] = "utf-8"
    rejected_at: datetime = Field(default_factory=utc_now)
    rejected_by: str

    @classmethod
    def of(
        cls,
        *,
        reason_code: str,
        reason: str,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        rejected_by: str,
    ) -> "DeadLetter":
        """Wrap a raw record, keeping undecodable bytes as base64 so nothing is lost."""
        key_text, key_encoding = _as_text(key) if key is not None else (None, "utf-8")
        text, encoding = _as_text(value or b"")
        return cls(
            reason_code=reason_code,
            reason=reason,
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=key_text,
            key_encoding=key_encoding,  # type: ignore[arg-type]
            value=text,
            value_encoding=encoding,  # type: ignore[arg-type]
            rejected_by=rejected_by,
        )

    def original_value(self) -> bytes:
        return _as_bytes(self.value, self.value_encoding)

    def original_key(self) -> bytes | None:
        return None if self.key is None else _as_bytes(self.key, self.key_encoding)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def _as_text(raw: bytes) -> tuple[str, str]:
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), "base64"


def _as_bytes(text: str, encoding: str) -> bytes:
    return base64.b64decode(text) if encoding == "base64" else text.encode()


_agent_input = TypeAdapter(AgentInput)


MAX_NESTING = 64  # of a payload: the agent's record nests it further, and JSON parsers stop at ~200


def _nesting(value: Any) -> int:
    """How deep lists and objects nest in a JSON value (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_NESTING:
                return deepest
            stack.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _check_nesting(message: BaseModel, what: str) -> None:
    for name in ("input", "payload", "output", "result"):
        if _nesting(getattr(message, name, None)) > MAX_NESTING:
            raise InvalidMessageError(
                "invalid_envelope",
                f"{what}: {name} nests lists/objects more than {MAX_NESTING} levels deep; flatten it",
            )


def _decode(adapter: TypeAdapter[Any], value: bytes | None, what: str) -> Any:
    if not value:
        raise InvalidMessageError("empty_value", f"{what}: the record has no value")
    try:
        message = adapter.validate_json(value)
        _check_nesting(message, what)
        return message
    except ValidationError as exc:
        json_errors = [e for e in exc.errors() if e["type"] in ("json_invalid", "json_type")]
        if json_errors:
            raise InvalidMessageError("not_json", f"{what}: value is not valid JSON: {json_errors[0]['msg']}") from exc
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise InvalidMessageError("invalid_envelope", f"{what}: {details}") from exc


def decode_agent_input(value: bytes | None) -> ScheduleAgent | SendEvent | CancelAgent | TimerFired | ChildCompleted:
    """Decode a record of `agent-events`; raises `InvalidMessageError` with a reason."""
    return _decode(_agent_input, value, "agent-events record")  # type: ignore[no-any-return]


_step_results_record = TypeAdapter(StepResultsRecord)
_step_command = TypeAdapter(StepCommand)


def decode_step_result(value: bytes | None) -> StepResult | StepProgress:
    """Decode a record of `step-results`: a result, or a progress record of an attempt still running."""
    return _decode(_step_results_record, value, "step-results record")  # type: ignore[no-any-return]


def decode_step_command(value: bytes | None) -> StepCommand:
    return _decode(_step_command, value, "step-commands record")  # type: ignore[no-any-return]
