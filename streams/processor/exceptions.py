"""Errors of the processor layer."""

from agentstream.topics.exceptions import AgentstreamError


class UndeliverableError(AgentstreamError):
    """A record can never be published as it is (its topic does not exist, it is too large).

    The message names the topic and the fix; the agent whose output it is gets parked
    with that reason and its outbox kept, to be published once the cause is fixed.
    """


__all__ = ["UndeliverableError"]
