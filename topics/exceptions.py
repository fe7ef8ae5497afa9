"""The root of every error agentstream raises on purpose.

It lives in `topics`, the one layer that both `agents` and `streams` build on.
"""


class AgentstreamError(Exception):
    """Base class of all agentstream errors; catch it to catch them all."""


class ConfigurationError(AgentstreamError):
    """Settings or topics are inconsistent; the message says how to fix them."""


class InvalidMessageError(AgentstreamError):
    """A record could not be decoded into a known envelope."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
