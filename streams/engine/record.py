"""The one record a processor keeps per agent ID (the value of the RocksDB table).

Besides what the API shows (status, fields, recent events, result), it holds what a
replay needs: the `base` the agent restarts from and the `journal` of inputs applied
since, plus the bookkeeping of steps, timers and children in flight.
"""

from __future__ import annotations

import json
import weakref
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from agentstream.topics import AgentStatus, ParentRef

from .dedup import Delivery
from .fields import json_copy

Strict = ConfigDict(extra="forbid")

# The record's format. A processor refuses (and dead-letters the input of) a record with a
# higher one: it was written by a newer version that this one cannot read without losing data.
FORMAT = 4
# 1: before the outbox; 2: before `waiting` (their records load with empty defaults);
# 3: client keys as text with float times (they load as digests: dedup.RecentKeys)
READABLE_FORMATS = frozenset({1, 2, 3, 4})


class ReceivedEvent(BaseModel):
    """One applied event, kept in arrival order (the most recent ones only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    payload: JsonValue = None
    payload_bytes: int | None = None  # set instead of `payload` when it was too large to keep here
    message_id: str
    received_at: datetime
    result: JsonValue = None
    error: str | None = None
    done: bool = True  # False while its handler still awaits something


class Outcome(BaseModel):
    """How a durable awaitable ended: a value, or an error to raise in the agent's code."""

    model_config = Strict

    ok: bool
    value: JsonValue = None
    error_type: str | None = None
    message: str | None = None
    attempts: int = 0


class Consumed(BaseModel):
    """A result one coroutine received; compaction lets it re-receive it after a restart."""

    model_config = Strict

    kind: Literal["step", "child", "emit", "send"]
    key: str  # the function, "agent_type/agent_id" of a child, the type of an emitted event, or "kind:agent:name" of a send
    input: JsonValue = None
    outcome: Outcome


class Seed(BaseModel):
    """A coroutine (re)started at the base: `run`, or an event handler still waiting."""

    model_config = Strict

    kind: Literal["run", "event"]
    name: str | None = None  # the event's name
    payload: JsonValue = None  # run's input, or the event's payload
    message_id: str | None = None
    prologue: list[Consumed] = Field(default_factory=list)


class Base(BaseModel):
    """Where a replay starts: fields (None: call `__init__`) and the coroutines to start."""

    model_config = Strict

    fields: dict[str, JsonValue] | None = None
    seeds: list[Seed] = Field(default_factory=list)
    next_seq: int = 1
    draws: int = 0
    at: datetime
    commands: list[str] = Field(default_factory=list)  # what starting the seeds issued


class JournalEntry(BaseModel):
    """One input the agent's code saw since the base, and the commands it issued in response."""

    model_config = Strict

    kind: Literal["event", "step", "timer", "child"]
    at: datetime
    message_id: str
    name: str | None = None
    payload: JsonValue = None
    seq: int | None = None
    outcome: Outcome | None = None
    commands: list[str] = Field(default_factory=list)


class StepState(BaseModel):
    """A step in flight: what to send again on retry, and how far it got."""

    model_config = Strict

    seq: int
    function: str
    input: JsonValue = None
    task_queue: str
    attempt: int = 1
    options: dict[str, JsonValue] = Field(default_factory=dict)
    scheduled_at: datetime
    sent_at: datetime | None = None  # of the current attempt's command
    started_at: datetime | None = None  # when a worker reported it started the current attempt
    last_error: str | None = None


class ChildState(BaseModel):
    """A child running on behalf of this agent; removed once its result arrived."""

    model_config = Strict

    agent_id: str
    run_id: str
    agent_type: str
    input: JsonValue = None  # not kept since format 2 (the outbox carries the schedule)
    message_id: str = ""
    awaited: bool
    done: bool = False


WaitKind = Literal["condition", "step", "timer", "child", "other"]


class Waiting(BaseModel):
    """What one coroutine of a running agent is suspended on (waits.py says why it is kept)."""

    model_config = Strict

    coroutine: str  # "run", an event handler's name, or the function of a task the agent's code started
    on: WaitKind
    detail: str = ""  # the step's function, the child, the timer's time, the condition's source line
    where: str = ""  # "file:line in function" of the agent's own code


class OutboxItem(BaseModel):
    """One record a turn produced, kept with the record until the next turn replaces it.

    Every output is published from here, the first time and after a crash alike, so an
    output can only be lost together with the turn that produced it (which a redelivery
    of its input then repeats).
    """

    model_config = Strict

    topic: Literal["agent-events", "agent-updates", "dead-letters", "step-commands", "agent-stream"]
    task_queue: str | None = None  # of step-commands
    key: str | None
    value: dict[str, JsonValue]


class AgentRecord(BaseModel):
    """An agent's durable state: identity, status, fields and what a replay needs."""

    model_config = Strict

    format: int = FORMAT
    agent_id: str
    agent_type: str
    run_id: str
    status: AgentStatus
    input: JsonValue = None
    fields: dict[str, JsonValue] = Field(default_factory=dict)
    events: list[ReceivedEvent] = Field(default_factory=list)
    result: JsonValue = None
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    inputs_applied: int = 0
    parent: ParentRef | None = None
    origin: str = ""  # message ID of the schedule that started the agent; kept across continue-as-new
    revision: int = 0
    base: Base | None = None
    journal: list[JournalEntry] = Field(default_factory=list)
    steps: dict[str, StepState] = Field(default_factory=dict)
    timers: dict[str, datetime] = Field(default_factory=dict)
    children: dict[str, ChildState] = Field(default_factory=dict)
    compactions: int = 0
    waiting: list[Waiting] = Field(default_factory=list)  # after the last turn, while running
    parked: list[dict[str, JsonValue]] = Field(default_factory=list)
    delivery: Delivery = Field(default_factory=Delivery)
    outbox: list[OutboxItem] = Field(default_factory=list)
    undelivered: bool = False  # the outbox could not be published; publish it before anything else

    def to_bytes(self) -> bytes:
        return _with_events(self.model_dump_json(exclude=_EVENTS).encode(), self.events)

    @classmethod
    def from_bytes(cls, data: bytes) -> "AgentRecord":
        return cls.model_validate_json(data)

    def evolve(self, **changes: object) -> "AgentRecord":
        """A new version of this record sharing nothing mutable with it that a turn changes."""
        changes.setdefault("delivery", self.delivery.independent_copy())
        changes.setdefault("fields", json_copy(self.fields))
        return self.model_copy(update=changes)

    def next_timer_at(self) -> datetime | None:
        return min(self.timers.values()) if self.timers else None

    def public_json(self) -> bytes:
        """What the HTTP API and the client show, as JSON: no replay or delivery bookkeeping.

        Pydantic writes the shown fields in one pass, the kept events come from their own JSON
        (`_event_json`), and the few derived ones are added after them. Dumping to Python objects
        and then to JSON, which clients polling an agent paid after every change (W1 of the speed
        issue), took three times as long as the one pass; each event's own JSON then made it three
        times cheaper again (54 -> 17 us with 50 events).
        """
        shown = _with_events(self.model_dump_json(exclude=_NOT_SHOWN).encode(), self.events)
        derived = {
            "journal_length": len(self.journal),
            "steps_in_flight": len(self.steps),
            "timers": {key: at.isoformat() for key, at in self.timers.items()},
            "children": {c.agent_id: {"agent_type": c.agent_type, "done": c.done} for c in self.children.values()},
            "parked_inputs": len(self.parked),
        }
        return shown[:-1] + b"," + json.dumps(derived, separators=(",", ":")).encode()[1:]

    def public_view(self) -> dict[str, JsonValue]:
        """`public_json` as Python values: exactly what a client reads."""
        view: dict[str, JsonValue] = json.loads(self.public_json())
        return view


_EVENTS = {"events"}  # written from each event's own JSON (_with_events)
_NOT_SHOWN = {"delivery", "base", "journal", "steps", "timers", "children", "parked", "outbox", "undelivered", *_EVENTS}

# The JSON of each received event alive, serialised once. A record is written after every turn
# with up to 100 kept events, which a turn rarely changes (they are frozen: a change is a new
# one), and they were most of its serialisation (W1 of the speed issue: 50 events, 10 kB of
# 10.3; `to_bytes` 51 -> 13 us). Keyed by identity, and dropped with the event (so an identity
# is never reused while its entry is kept).
_EVENT_JSON: dict[int, tuple["weakref.ref[ReceivedEvent]", bytes]] = {}


def _event_json(event: ReceivedEvent) -> bytes:
    key = id(event)
    kept = _EVENT_JSON.get(key)
    if kept is not None and kept[0]() is event:
        return kept[1]
    data = event.model_dump_json().encode()
    _EVENT_JSON[key] = (weakref.ref(event, lambda ref: _forget(key, ref)), data)
    return data


def _forget(key: int, ref: "weakref.ref[ReceivedEvent]") -> None:
    kept = _EVENT_JSON.get(key)
    if kept is not None and kept[0] is ref:
        del _EVENT_JSON[key]


def _with_events(dumped: bytes, events: list[ReceivedEvent]) -> bytes:
    """A record dumped without its events (a JSON object: agent_id is always there), with them."""
    return b"".join((dumped[:-1], b',"events":[', b",".join([_event_json(event) for event in events]), b"]}"))
