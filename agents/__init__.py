"""The authoring API: declare agents and functions, and talk to them with a client.

Everything an agent author needs is importable from here, under the names Restack
users know (`agent`, `condition`, `function`, `log`, `import_functions`, ...).
"""

from ._agent import agent, agent_info, child_execute, child_start, condition, event, step, uuid
from ._client import AgentClient
from ._context import AgentInfo, ChildHandle
from ._function import function, import_functions
from ._heartbeat import heartbeat
from ._log import log
from ._policy import RetryPolicy
from .exceptions import (
    AgentContextError,
    AgentDefinitionError,
    AgentFailedError,
    AgentNotFoundError,
    ApiUnavailableError,
    BrokerUnavailableError,
    ChildFailedError,
    NondeterminismError,
    RetryableError,
    StepFailedError,
    TerminalError,
    TimeoutError,
    UnknownAgentTypeError,
)

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
    "NondeterminismError",
    "RetryPolicy",
    "RetryableError",
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
    "uuid",
]
