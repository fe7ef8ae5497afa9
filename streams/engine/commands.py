"""What an agent's code asks for in a turn; the engine turns these into records to send.

Every durable operation gets the next sequence number of the run. A command's
`descriptor` is what the journal keeps to check that a replay issues the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agentstream.agents._context import StepOptions


@dataclass(frozen=True)
class StepCall:
    seq: int
    function: str
    input: Any
    options: StepOptions

    @property
    def descriptor(self) -> str:
        return f"step:{self.seq}:{self.function}"


@dataclass(frozen=True)
class TimerCall:
    seq: int
    fire_at: float  # agent time (epoch seconds)

    @property
    def descriptor(self) -> str:
        return f"timer:{self.seq}"


@dataclass(frozen=True)
class ChildCall:
    seq: int
    agent_type: str
    agent_id: str
    input: Any
    wait: bool
    message_id: str  # of the schedule record: the child's run ID derives from it

    @property
    def descriptor(self) -> str:
        return f"child:{self.seq}:{self.agent_type}:{self.agent_id}"


@dataclass(frozen=True)
class EmitCall:
    """A run event for agent-stream (and, with `update`, agent-updates); nothing to wait for.

    It takes a sequence number like every durable operation, so a replay issues it at
    the same place and the event keeps its identity; only the first run publishes it.
    """

    seq: int
    type: str
    data: Any
    update: bool

    @property
    def descriptor(self) -> str:
        return f"emit:{self.seq}:{self.type}"


@dataclass(frozen=True)
class SendCall:
    """A record for another agent: an event (`agent.send`) or its idempotent schedule (`agent.ensure_started`).

    Its message ID derives from the run and the sequence number, so a re-publish after a
    crash is recognised downstream as the same message.
    """

    seq: int
    kind: Literal["event", "schedule"]
    agent_id: str
    name: str  # the event's name, or the agent type to schedule
    payload: Any

    @property
    def descriptor(self) -> str:
        return f"send:{self.seq}:{self.kind}:{self.agent_id}:{self.name}"


@dataclass(frozen=True)
class Cancel:
    """The code stopped waiting for `seq` (a timer that is no longer needed, a cancelled step)."""

    seq: int

    @property
    def descriptor(self) -> str:
        return f"cancel:{self.seq}"


Command = StepCall | TimerCall | ChildCall | EmitCall | SendCall | Cancel
