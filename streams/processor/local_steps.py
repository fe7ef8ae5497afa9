"""The processor's runner of local steps (`agent.step(..., local=True)`, engine/local_steps.py).

It runs an attempt exactly as a worker would (worker/execute.py: input validation,
timeouts, terminal and retryable errors), with the functions registered in the
processor's own process (its `--app`). An attempt without a start_to_close timeout gets
`DEFAULT_TIMEOUT_S`: while a local step runs its agent applies no other input (other
agents go on, lanes.py), and a rebalance waits for it, so one must never wait without a bound.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agentstream.agents._registry import FunctionDefinition, function_definition
from agentstream.topics import StepCommand, StepResult

from ..worker.execute import execute

log = logging.getLogger("agentstream.processor")

DEFAULT_TIMEOUT_S = 10.0

__all__ = ["DEFAULT_TIMEOUT_S", "ProcessorLocalSteps"]


class ProcessorLocalSteps:
    """`LocalSteps` over the functions registered in this process."""

    def __init__(
        self,
        lookup: Callable[[str], FunctionDefinition | None] = function_definition,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._lookup = lookup
        self._default_timeout_s = default_timeout_s

    def runs(self, function: str) -> bool:
        return self._lookup(function) is not None

    async def run(self, command: StepCommand) -> StepResult:
        if command.start_to_close_timeout_s is None:
            command = command.model_copy(update={"start_to_close_timeout_s": self._default_timeout_s})
        definition = self._lookup(command.function)
        result = await execute(command, {command.function: definition} if definition is not None else {})
        if not result.ok and log.isEnabledFor(logging.INFO):
            assert result.error is not None
            log.info("local step failed", extra={"agent_id": command.agent_id, "function": command.function,
                                                 "attempt": command.attempt, "error_type": result.error.type})
        return result
