"""`step_context()`: what a running step function may know about the step it runs.

A step function runs on a worker, outside the agent. It sometimes needs the step's
identity: a side effect (a payment, an e-mail) wants an idempotency key that is the
same for every attempt of the step, and a function that produces output gradually (a
streamed model call) puts it on the agent's `agent-stream` as it goes. The worker sets
the context for each attempt; the function reads it with `step_context()`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .exceptions import AgentContextError

Emitter = Callable[[str, Any], Awaitable[None]]


@dataclass(frozen=True)
class StepContext:
    """The step an attempt belongs to (the same for all its attempts but `attempt`)."""

    agent_id: str
    run_id: str
    step_id: str
    attempt: int
    function: str
    _emit: Emitter | None = field(default=None, repr=False, compare=False)

    @property
    def idempotency_key(self) -> str:
        """A key for side effects: the same in every attempt of this step, unique across steps and runs."""
        return f"{self.agent_id}/{self.run_id}/{self.step_id}"

    @property
    def streams(self) -> bool:
        """Whether `emit` reaches `agent-stream` (false when the function is called outside a worker)."""
        return self._emit is not None

    async def emit(self, type: str, data: Any = None) -> None:
        """Put an event (e.g. `text_delta`) on the agent's stream, numbered within this attempt.

        The worker waits for every emitted event to be acknowledged before it reports the
        step's result, so the stream never lags behind the step's outcome. Outside a
        worker this does nothing.
        """
        if self._emit is not None:
            await self._emit(type, data)


_current: ContextVar[StepContext | None] = ContextVar("agentstream_step_context", default=None)


def step_context() -> StepContext:
    """The context of the step attempt running now; raises `AgentContextError` outside one."""
    context = _current.get()
    if context is None:
        raise AgentContextError(
            "step_context() can only be called inside a @function while a worker runs it as a step"
        )
    return context


def current_step() -> StepContext | None:
    """Like `step_context()`, but None outside a step (e.g. a function called directly in a test)."""
    return _current.get()
