"""The engine interface: how a processor applies one input to one agent's record.

Engines are pure Python: no Kafka, no Faust. A processor hands an engine the current
record and one decoded input, and gets back the new record plus what to publish.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from agentstream.topics import (
    AgentUpdate,
    CancelAgent,
    ChildCompleted,
    DeadLetter,
    Envelope,
    ScheduleAgent,
    SendEvent,
    StepCommand,
    StepProgress,
    StepResult,
    StreamEvent,
    TimerFired,
    derived_message_id,
)

from .record import AgentRecord, OutboxItem

Input = ScheduleAgent | SendEvent | CancelAgent | StepResult | StepProgress | TimerFired | ChildCompleted


@dataclass(frozen=True)
class Origin:
    """Where an input came from: its offset de-duplicates redeliveries, its bytes go into a
    dead letter unchanged when the input is rejected."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None

    @property
    def source(self) -> str:
        return f"{self.topic}#{self.partition}"


LETTER_VALUE_LIMIT = 64_000  # larger values stay in their source topic; the letter says where


def dead_letter(
    origin: Origin, code: str, reason: str, rejected_by: str, max_value_bytes: int = LETTER_VALUE_LIMIT
) -> DeadLetter:
    """The dead letter of a rejected record: the same one however often it is rejected.

    A value larger than `max_value_bytes` is left out (a dead letter must itself fit a
    message, and may have to wait in an agent's outbox); the reason says where to read it.
    """
    value = origin.value
    if value is not None and len(value) > max_value_bytes:
        reason += (
            f" (the record's value, {len(value)} bytes, is too large to copy into this dead letter: it is at "
            f"{origin.topic} partition {origin.partition} offset {origin.offset} until retention removes it)"
        )
        value = b""
    letter = DeadLetter.of(
        reason_code=code, reason=reason, topic=origin.topic, partition=origin.partition, offset=origin.offset,
        key=origin.key, value=value, rejected_by=rejected_by,
    )
    position = f"{origin.topic}#{origin.partition}@{origin.offset}"
    return letter.model_copy(update={"message_id": derived_message_id(position, "dead-letter")})


@dataclass(frozen=True)
class Rejection:
    """Why an input cannot be applied; the processor dead-letters it with this reason."""

    code: str
    reason: str


@dataclass(frozen=True)
class StepOutcome:
    """One step attempt's fate, as the agent's engine saw it (for metrics)."""

    function: str
    outcome: str  # completed, retried, failed, timed_out
    seconds: float  # from the step's first schedule to this outcome


@dataclass
class TurnFacts:
    """What happened in a turn, for metrics and logs."""

    journal_length: int = 0
    compacted: bool = False
    compaction_refused: bool = False
    nondeterminism: bool = False
    blocked: bool = False
    too_large: bool = False  # the turn was not recorded as run: its record would have been too large
    steps: list[StepOutcome] = field(default_factory=list)


@dataclass
class TurnOutcome:
    """The result of applying one input."""

    record: AgentRecord | None
    rejection: Rejection | None = None
    updates: list[AgentUpdate] = field(default_factory=list)
    commands: list[StepCommand] = field(default_factory=list)
    messages: list[Envelope] = field(default_factory=list)  # to agent-events (children, parents)
    stream: list[StreamEvent] = field(default_factory=list)  # run events the code emitted, to agent-stream
    dead_letters: list[DeadLetter] = field(default_factory=list)
    ignored: bool = False  # e.g. a late step result: nothing to do, nothing wrong
    facts: TurnFacts = field(default_factory=TurnFacts)
    # Set by the engine when it seals the turn (see DurableEngine.apply):
    label: str = ""  # applied, ignored, duplicate, dead_lettered, parked
    redelivered: bool = False  # the input was applied before (a crash or rebalance sent it again)
    stored: bytes | None = None  # the record to persist; None: nothing to write
    publish: list[OutboxItem] = field(default_factory=list)  # what to publish, in order

    def absorb(self, other: "TurnOutcome") -> None:
        """Add what `other` (a later input in the same call) produced."""
        self.updates += other.updates
        self.commands += other.commands
        self.messages += other.messages
        self.stream += other.stream
        self.dead_letters += other.dead_letters
        self.facts.steps += other.facts.steps

    @classmethod
    def rejected(cls, record: AgentRecord | None, code: str, reason: str) -> "TurnOutcome":
        return cls(record=record, rejection=Rejection(code, reason))


class Engine(Protocol):
    async def apply(
        self, record: AgentRecord | None, message: Input, now: datetime, origin: Origin | None = None
    ) -> TurnOutcome:
        """Apply `message` to `record` (None if the agent has no record yet); never raises.

        Returns the sealed outcome: the record to store (`stored`) and what to publish.
        Must not mutate `record`.
        """
        ...

    def undeliverable(self, record: AgentRecord, reason: str, now: datetime) -> TurnOutcome:
        """`record`'s outbox cannot be published: park the agent, keeping the outbox."""
        ...

    def forget(self, agent_id: str) -> None:
        """Drop what this process holds in memory for the agent (its next input starts from its record)."""
        ...
