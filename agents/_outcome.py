"""`InputOutcome`: what became of a schedule, event or cancel a client sent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputOutcome:
    """The processor's verdict on one input, as `AgentClient.input_outcome` reports it.

    `outcome` is `applied`, `duplicate` (applied before: a repeated idempotency key),
    `parked` (kept until its stuck agent is fixed), `ignored`, or `dead_lettered` (then
    `reason_code` and `reason` say why; the record is on the dead-letters topic).
    """

    agent_id: str
    input_id: str
    outcome: str
    reason_code: str | None = None
    reason: str | None = None

    @property
    def rejected(self) -> bool:
        return self.outcome == "dead_lettered"
