"""Errors raised to agent authors and client users."""

import builtins

from agentstream.streams.exceptions import BrokerUnavailableError as BrokerUnavailableError
from agentstream.topics.exceptions import AgentstreamError


class AgentDefinitionError(AgentstreamError):
    """An agent class or function is declared in a way agentstream cannot run."""


class UnknownAgentTypeError(AgentstreamError):
    """No agent type of that name is registered."""


class AgentNotFoundError(AgentstreamError):
    """No agent with that ID exists (it was never scheduled, or not yet processed)."""


class ApiUnavailableError(AgentstreamError):
    """No processor answered at the configured HTTP address."""


class TerminalError(AgentstreamError):
    """Raised by a function: the step failed for good; no retry will help."""


class RetryableError(AgentstreamError):
    """Raised by a function: the step failed but may succeed later, optionally after `retry_after`."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AgentContextError(AgentstreamError):
    """An agent-only call (agent.step, condition, ...) was made outside an agent's code."""


class NondeterminismError(AgentstreamError):
    """Replaying an agent's journal took another path than the original run.

    The agent's code changed in a way that is incompatible with its history, or it
    uses a source of nondeterminism (wall clock, random, I/O) instead of agent.now(),
    agent.random(), agent.uuid() and steps. The agent is parked with status `stuck`.
    """


class StepFailedError(AgentstreamError):
    """A step failed for good: a non-retryable error, or its retries or time ran out."""

    def __init__(self, message: str, *, function: str, error_type: str, attempts: int) -> None:
        super().__init__(message)
        self.function = function
        self.error_type = error_type
        self.attempts = attempts


class ChildFailedError(AgentstreamError):
    """A child agent awaited with `agent.child_execute` failed or was cancelled."""

    def __init__(self, message: str, *, child_id: str, status: str) -> None:
        super().__init__(message)
        self.child_id = child_id
        self.status = status


class TimeoutError(AgentstreamError, builtins.TimeoutError):  # noqa: A001 - the name users expect
    """A `condition` (or another durable wait) did not finish within its timeout.

    Also a builtin `TimeoutError`, so `except TimeoutError` catches it either way.
    """


class AgentFailedError(AgentstreamError):
    """`get_agent_result`: the agent ended without a result (failed or cancelled)."""

    def __init__(self, message: str, *, agent_id: str, status: str, error: str | None) -> None:
        super().__init__(message)
        self.agent_id = agent_id
        self.status = status
        self.error = error


class InputRejectedError(AgentstreamError):
    """An input sent with `wait=` was dead-lettered by the agent's processor.

    `reason_code` is one of the dead-letter reason codes (WIRE.md), e.g. `unknown_event`,
    `invalid_payload`, `agent_not_found`, `already_running`; `reason` says what to fix.
    """

    def __init__(self, message: str, *, agent_id: str, input_id: str, reason_code: str | None,
                 reason: str | None) -> None:
        super().__init__(message)
        self.agent_id = agent_id
        self.input_id = input_id
        self.reason_code = reason_code
        self.reason = reason
