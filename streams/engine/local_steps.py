"""Local steps: short functions the processor runs itself, journaled in the turn that asked.

A step asked for with `agent.step(..., local=True)` becomes a step command like any
other (same attempt bookkeeping, timers and retry policy, steps.py), but when the
engine has a `LocalSteps` runner that knows the function, the command is not sent to a
worker: the runner runs the attempt right away and its result is applied as the next
input of the same `apply` call, until the agent waits on something else. So a run of
three local steps costs one input, one record write and one checkpoint instead of four
turns and six trips through Kafka (what Temporal calls local activities, Restate
`ctx.run`).

Crash safety is the step's usual rule, at least once: the record and outputs of the
turn are written only after the local attempts ran, so a crash before that loses the
attempts together with the input, which is redelivered and runs them again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from agentstream.topics import StepCommand, StepResult

from .base import Input, TurnOutcome
from .record import AgentRecord

__all__ = ["LocalSteps", "run_local_steps"]


class LocalSteps(Protocol):
    """What runs local steps for an engine (the processor's functions, `streams/processor/local_steps.py`)."""

    def runs(self, function: str) -> bool:
        """Whether this runner has `function`; a local step it lacks goes to a worker."""
        ...

    def run(self, command: StepCommand) -> Awaitable[StepResult]:
        """Run one attempt; never raises for a failure of the step (the result says so)."""
        ...


Turn = Callable[[AgentRecord, Input], Awaitable[TurnOutcome]]


def _is_local(record: AgentRecord, command: StepCommand, runner: LocalSteps) -> bool:
    step = record.steps.get(command.step_id)
    return step is not None and bool(step.options.get("local")) and runner.runs(command.function)


async def run_local_steps(outcome: TurnOutcome, runner: LocalSteps, turn: Turn) -> TurnOutcome:
    """Run `outcome`'s local step commands and apply their results with `turn`, folding every
    later turn into `outcome`, until no local command is left (or the agent got stuck)."""
    while outcome.record is not None and outcome.rejection is None and outcome.label != "parked":
        record = outcome.record
        local = [command for command in outcome.commands if _is_local(record, command, runner)]
        if not local:
            break
        outcome.commands = [command for command in outcome.commands if command not in local]
        # Steps the code started together (asyncio.gather) run together; their results apply in order.
        results = await asyncio.gather(*(runner.run(command) for command in local))
        for result in results:
            assert outcome.record is not None
            after = await turn(outcome.record, result)
            outcome.absorb(after)
            if after.record is not None and after.rejection is None:
                outcome.record = after.record
            facts, later = outcome.facts, after.facts
            facts.journal_length, facts.compacted = later.journal_length, facts.compacted or later.compacted
            facts.compaction_refused = later.compaction_refused
            facts.nondeterminism = facts.nondeterminism or later.nondeterminism
            facts.blocked = facts.blocked or later.blocked
            if after.label == "parked":  # stuck: the later results are parked with the agent, in order
                outcome.label = "parked"
    return outcome
