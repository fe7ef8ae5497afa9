"""The authoring API: declare agents and functions, and talk to them with a client.

Everything an agent author needs is importable from here, under the names Restack
users know (`agent`, `condition`, `function`, `log`, `import_functions`, ...).

`AgentClient` is loaded on first access, not on import: the engine imports this
package for the authoring API, and must not drag in aiokafka, aiohttp and the broker
helpers the client needs (tests/unit/test_import_graph.py pins that).
"""

from typing import TYPE_CHECKING, Any

from ._agent import agent, agent_info, child_execute, child_start, condition, event, step, uuid
from ._context import AgentInfo, ChildHandle
from ._function import function, import_functions
from ._heartbeat import heartbeat
from ._log import log
from ._outcome import InputOutcome
from ._policy import RetryPolicy
from ._step_context import StepContext, step_context
from .exceptions import (
    AgentContextError,
    AgentDefinitionError,
    AgentFailedError,
    AgentNotFoundError,
    ApiUnavailableError,
    BrokerUnavailableError,
    ChildFailedError,
    InputRejectedError,
    NondeterminismError,
    RetryableError,
    StepFailedError,
    TerminalError,
    TimeoutError,
    UnknownAgentTypeError,
)

from . import _cron  # noqa: F401,E402  (registers the built-in schedule type, agentstream.Cron)

if TYPE_CHECKING:
    from ._client import AgentClient


def __getattr__(name: str) -> Any:
    """Import the client (and with it Kafka and HTTP libraries) only when someone asks for it."""
    if name == "AgentClient":
        from ._client import AgentClient

        globals()[name] = AgentClient  # later lookups skip this function
        return AgentClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"AgentClient"})


__all__ = [
    "AgentClient",
    "AgentContextError",
    "AgentDefinitionError",
    "AgentFailedError",
    "AgentInfo",
    "AgentNotFoundError",
    "ApiUnavailableError",
    "BrokerUnavailableError",
    "ChildFailedError",
    "ChildHandle",
    "InputOutcome",
    "InputRejectedError",
    "NondeterminismError",
    "RetryPolicy",
    "RetryableError",
    "StepContext",
    "StepFailedError",
    "TerminalError",
    "TimeoutError",
    "UnknownAgentTypeError",
    "agent",
    "agent_info",
    "child_execute",
    "child_start",
    "condition",
    "event",
    "function",
    "heartbeat",
    "import_functions",
    "log",
    "step",
    "step_context",
    "uuid",
]
