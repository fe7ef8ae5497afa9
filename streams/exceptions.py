"""Errors of the runtime pods (processor, worker, CLI)."""

from agentstream.topics.exceptions import AgentstreamError, ConfigurationError


class BrokerUnavailableError(AgentstreamError):
    """The Kafka broker could not be reached; the message names the address and the fix."""


class TopicsNotCopartitionedError(ConfigurationError):
    """agent-events and step-results differ in partition count."""


__all__ = ["AgentstreamError", "BrokerUnavailableError", "ConfigurationError", "TopicsNotCopartitionedError"]
