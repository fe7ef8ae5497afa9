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
    Envelope,
    ScheduleAgent,
    SendEvent,
    StepCommand,
    StepResult,
    TimerFired,
)

from .record import AgentRecord

Input = ScheduleAgent | SendEvent | CancelAgent | StepResult | TimerFired | ChildCompleted


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
    steps: list[StepOutcome] = field(default_factory=list)


@dataclass
class TurnOutcome:
    """The result of applying one input."""

    record: AgentRecord | None
    rejection: Rejection | None = None
    updates: list[AgentUpdate] = field(default_factory=list)
    commands: list[StepCommand] = field(default_factory=list)
    messages: list[Envelope] = field(default_factory=list)  # to agent-events (children, parents)
    ignored: bool = False  # e.g. a late step result: nothing to do, nothing wrong
    facts: TurnFacts = field(default_factory=TurnFacts)

    @classmethod
    def rejected(cls, record: AgentRecord | None, code: str, reason: str) -> "TurnOutcome":
        return cls(record=record, rejection=Rejection(code, reason))


class Engine(Protocol):
    def pending_outputs(self, record: AgentRecord) -> TurnOutcome:
        """The records `record` expects to have been sent, to send again after a crash."""
        ...

    async def apply(self, record: AgentRecord | None, message: Input, now: datetime) -> TurnOutcome:
        """Apply `message` to `record` (None if the agent has no record yet).

        Must not mutate `record`: on a rejection the processor keeps the old one.
        """
        ...
