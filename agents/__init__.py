"""The authoring API: declare agents and functions, and talk to them with a client."""

from ._agent import agent
from ._client import AgentClient
from ._function import function, import_functions
from ._log import log
from .exceptions import (
    AgentDefinitionError,
    AgentNotFoundError,
    ApiUnavailableError,
    BrokerUnavailableError,
    RetryableError,
    TerminalError,
    UnknownAgentTypeError,
)

__all__ = [
    "AgentClient",
    "AgentDefinitionError",
    "AgentNotFoundError",
    "ApiUnavailableError",
    "BrokerUnavailableError",
    "RetryableError",
    "TerminalError",
    "UnknownAgentTypeError",
    "agent",
    "function",
    "import_functions",
    "log",
]
