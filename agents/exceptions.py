"""Errors raised to agent authors and client users."""

from agentstream.streams.exceptions import BrokerUnavailableError
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
