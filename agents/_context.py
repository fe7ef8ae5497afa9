"""The bridge between agent code and the engine that runs it.

Agent code calls `agent.step(...)`, `condition(...)` and friends; they find the
engine through the running event loop, which is the engine's deterministic loop
while an agent turn runs. The engine implements `AgentRuntime`; this module knows
nothing about it beyond this interface (temporalio's `workflow._Runtime` is the model).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict

from ._policy import RetryPolicy
from .exceptions import AgentContextError

RUNTIME_ATTRIBUTE = "agentstream_runtime"


class AgentInfo(BaseModel):
    """What `agent.agent_info()` returns."""

    model_config = ConfigDict(frozen=True)

    agent_id: str
    agent_type: str
    run_id: str
    task_queue: str
    started_at: datetime
    parent_agent_id: str | None = None
    parent_run_id: str | None = None
    journal_length: int = 0
    is_replaying: bool = False


class ChildHandle(BaseModel):
    """A started child agent: its ID and run ID, enough to send it events or cancel it."""

    model_config = ConfigDict(frozen=True)

    agent_id: str
    run_id: str
    agent_type: str


class StepOptions(BaseModel):
    """Everything `agent.step` passes to the engine besides the function and input."""

    model_config = ConfigDict(frozen=True)

    task_queue: str | None = None
    start_to_close_timeout: float | None = None
    schedule_to_close_timeout: float | None = None
    schedule_to_start_timeout: float | None = None
    heartbeat_timeout: float | None = None
    retry_policy: RetryPolicy | None = None
    # Run on the processor, its result journaled in the same turn (None, not False, when unset:
    # a record's step options stay as they were before the option existed).
    local: bool | None = None


class AgentRuntime(ABC):
    """What agent code may ask of the engine that runs it."""

    @abstractmethod
    def info(self) -> AgentInfo: ...

    @abstractmethod
    def is_replaying(self) -> bool: ...

    @abstractmethod
    def now(self) -> datetime: ...

    @abstractmethod
    def uuid(self) -> str: ...

    @abstractmethod
    def random(self) -> float: ...

    @abstractmethod
    async def step(self, function: str, function_input: Any, options: StepOptions) -> Any: ...

    @abstractmethod
    async def sleep(self, seconds: float) -> None: ...

    @abstractmethod
    async def condition(self, predicate: Callable[[], Any], timeout: float | None) -> bool: ...

    @abstractmethod
    async def child(self, agent_type: str, agent_id: str | None, agent_input: Any, wait: bool) -> Any: ...

    @abstractmethod
    def emit(self, type: str, data: Any, update: bool) -> None: ...

    @abstractmethod
    def send(self, kind: str, agent_id: str, name: str, payload: Any) -> None: ...

    @abstractmethod
    def should_continue_as_new(self) -> bool: ...

    @abstractmethod
    def continue_as_new(self, agent_input: Any) -> NoReturn: ...

    @abstractmethod
    def log_context(self) -> dict[str, Any]: ...


def current_runtime(what: str) -> AgentRuntime:
    """The runtime of the agent whose code is running now; `what` names the caller in errors."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    runtime = getattr(loop, RUNTIME_ATTRIBUTE, None)
    if runtime is None:
        raise AgentContextError(
            f"{what} can only be called inside an agent's @agent.run or @agent.event code "
            "while agentstream runs it; in a step function, do the work directly"
        )
    return runtime  # type: ignore[no-any-return]


def optional_runtime() -> AgentRuntime | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return getattr(loop, RUNTIME_ATTRIBUTE, None)


class ContinueAsNew(BaseException):
    """Raised by `agent.agent_continue_as_new()` to end `run`; the engine restarts it.

    A BaseException, so a user's `except Exception` around it cannot swallow it.
    """

    def __init__(self, agent_input: Any) -> None:
        super().__init__("agent_continue_as_new")
        self.agent_input = agent_input
