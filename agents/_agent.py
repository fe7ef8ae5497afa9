"""The `agent` namespace of the authoring API: declarations and durable operations.

`@agent.defn`, `@agent.event` and `@agent.run` declare an agent type; `agent.step`,
`agent.sleep`, `condition`, children, `agent.uuid()` and friends are what its code
awaits. The durable operations only work while the engine runs the agent's code.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar, overload

from pydantic_core import to_jsonable_python

from agentstream.topics import StreamEventType

from ._context import AgentInfo, ChildHandle, ContinueAsNew, StepOptions, current_runtime
from ._policy import RetryPolicy
from ._registry import (
    AgentDefinition,
    EventDefinition,
    agent_definitions,
    function_definitions,
    register_agent,
    single_parameter,
)
from .exceptions import AgentDefinitionError

C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])

_EVENT_MARK = "__agentstream_event__"
_RUN_MARK = "__agentstream_run__"


def _require_coroutine(fn: Callable[..., Any], decorator: str) -> None:
    import inspect

    if not inspect.iscoroutinefunction(fn):
        raise AgentDefinitionError(f"{decorator} needs an `async def` method, got {fn.__qualname__}")


class _AgentNamespace:
    """Decorators that declare an agent type; used as `agent.defn()`, `agent.event`, ..."""

    @overload
    def defn(self, cls: C) -> C: ...
    @overload
    def defn(self, cls: None = None, *, name: str | None = None) -> Callable[[C], C]: ...

    def defn(self, cls: C | None = None, *, name: str | None = None) -> C | Callable[[C], C]:
        """Declare an agent type, registered under the class name or `name`."""

        def decorate(cls: C) -> C:
            events: dict[str, EventDefinition] = {}
            run_method: str | None = None
            for attr, value in vars(cls).items():
                if getattr(value, _EVENT_MARK, None):
                    event_name = getattr(value, _EVENT_MARK)
                    events[event_name] = EventDefinition(
                        event_name, attr, single_parameter(value, skip_self=True)
                    )
                if getattr(value, _RUN_MARK, False):
                    if run_method is not None:
                        raise AgentDefinitionError(f"{cls.__qualname__} has two @agent.run methods")
                    run_method = attr
            register_agent(
                AgentDefinition(
                    name=name or cls.__name__,
                    cls=cls,
                    run_method=run_method,
                    run_parameter=(
                        single_parameter(getattr(cls, run_method), skip_self=True) if run_method else None
                    ),
                    events=events,
                )
            )
            return cls

        return decorate(cls) if cls is not None else decorate

    @overload
    def event(self, fn: F) -> F: ...
    @overload
    def event(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...

    def event(self, fn: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
        """Declare an event handler; the event's name is the method's name or `name`."""

        def decorate(fn: F) -> F:
            _require_coroutine(fn, "@agent.event")
            setattr(fn, _EVENT_MARK, name or fn.__name__)
            return fn

        return decorate(fn) if fn is not None else decorate

    def run(self, fn: F) -> F:
        """Declare the agent's entry point, started when the agent is scheduled."""
        _require_coroutine(fn, "@agent.run")
        setattr(fn, _RUN_MARK, True)
        return fn


    # -- durable operations, valid inside an agent's code ---------------------------------

    async def step(
        self,
        function: Callable[..., Any] | str,
        function_input: Any = None,
        *,
        task_queue: str | None = None,
        start_to_close_timeout: Seconds = None,
        schedule_to_close_timeout: Seconds = None,
        schedule_to_start_timeout: Seconds = None,
        heartbeat_timeout: Seconds = None,
        retry_policy: RetryPolicy | None = None,
        local: bool = False,
    ) -> Any:
        """Run a `@function` on a worker and return its output (raises StepFailedError).

        The step runs at least once and its result counts exactly once; failed attempts
        are retried per `retry_policy` (default: forever, backing off from 1 s to 100 s).

        `local=True` runs it on the processor that owns the agent, in the same turn, when
        that processor has the function registered (else it goes to a worker as usual):
        no round trip through Kafka and a worker, and its result is written with the turn
        that asked for it. For short functions (Temporal's local activities, Restate's
        `ctx.run`): while one runs, its agent takes no other input (other agents go on) and
        it uses the processor's CPU; an attempt without a `start_to_close_timeout` is given 10 s. Retries, timeouts and the
        at-least-once rule are the same as on a worker.
        """
        options = StepOptions(
            task_queue=task_queue,
            start_to_close_timeout=_seconds(start_to_close_timeout),
            schedule_to_close_timeout=_seconds(schedule_to_close_timeout),
            schedule_to_start_timeout=_seconds(schedule_to_start_timeout),
            heartbeat_timeout=_seconds(heartbeat_timeout),
            retry_policy=retry_policy,
            local=True if local else None,
        )
        runtime = current_runtime("agent.step()")
        return await runtime.step(_function_name(function), to_jsonable_python(function_input), options)

    async def sleep(self, duration: float | timedelta) -> None:
        """Wait on a durable timer: it survives restarts and fires once."""
        runtime = current_runtime("agent.sleep()")
        await runtime.sleep(_seconds(duration) or 0.0)

    async def condition(self, predicate: Callable[[], Any], timeout: float | timedelta | None = None) -> bool:
        """Same as the module-level `condition`."""
        return await condition(predicate, timeout)

    async def child_start(
        self,
        agent: type | str | None = None,
        agent_id: str | None = None,
        agent_input: Any = None,
        *,
        task_queue: str | None = None,
        workflow: type | str | None = None,
        workflow_id: str | None = None,
        workflow_input: Any = None,
    ) -> ChildHandle:
        """Start a child agent and return its handle without waiting for it."""
        runtime = current_runtime("agent.child_start()")
        agent_type, child_id, child_input = _child_args(agent, agent_id, agent_input, workflow, workflow_id, workflow_input)
        return await runtime.child(agent_type, child_id, child_input, wait=False)  # type: ignore[no-any-return]

    async def child_execute(
        self,
        agent: type | str | None = None,
        agent_id: str | None = None,
        agent_input: Any = None,
        *,
        task_queue: str | None = None,
        workflow: type | str | None = None,
        workflow_id: str | None = None,
        workflow_input: Any = None,
    ) -> Any:
        """Start a child agent and wait for its result (raises ChildFailedError)."""
        runtime = current_runtime("agent.child_execute()")
        agent_type, child_id, child_input = _child_args(agent, agent_id, agent_input, workflow, workflow_id, workflow_input)
        return await runtime.child(agent_type, child_id, child_input, wait=True)

    def emit(self, type: StreamEventType, data: Any = None, *, update: bool = False) -> None:
        """Publish a run event on the agent's `agent-stream` (with `update`, on agent-updates too).

        It is published once, after the turn that emitted it is recorded: a replay of the
        agent's code emits it again at the same place, and nothing is sent twice.
        `data` must be JSON (or a pydantic model / dataclass).
        """
        current_runtime("agent.emit()").emit(type, to_jsonable_python(data), update)

    def send(self, agent_id: str, event: str, payload: Any = None) -> None:
        """Send an event to another agent, once: it leaves after this turn is recorded.

        One-way: nothing comes back but what the other agent sends in return. The target
        must be running (start it with `ensure_started` if need be); if it is not, the
        event is dead-lettered with the reason, as from any other sender.
        """
        current_runtime("agent.send()").send("event", agent_id, event, to_jsonable_python(payload))

    def ensure_started(self, agent: type | str, agent_id: str, agent_input: Any = None) -> None:
        """Start the long-lived agent `agent_id` unless it was started this way before.

        Every agent that ensures the same (type, ID) sends the same schedule, so only the
        first starts it (the others are recognised as duplicates); not awaited. Meant for
        shared agents that live forever, like a user's memory.
        """
        current_runtime("agent.ensure_started()").send(
            "schedule", agent_id, _agent_type_name(agent), to_jsonable_python(agent_input)
        )

    def should_continue_as_new(self) -> bool:
        """True once the journal passed the configured length and compaction could not shorten it."""
        return current_runtime("agent.should_continue_as_new()").should_continue_as_new()

    def agent_continue_as_new(self, input: Any = None) -> NoReturn:  # noqa: A002 - Restack's name
        """End `run` and start it again in place: same agent, fields kept, journal dropped.

        Takes effect at once (the rest of `run` does not execute), awaited or not.
        """
        current_runtime("agent.agent_continue_as_new()")
        raise ContinueAsNew(to_jsonable_python(input))

    def uuid(self) -> str:
        """A unique ID that is the same when the agent's code is replayed."""
        return current_runtime("agent.uuid()").uuid()

    def now(self) -> datetime:
        """The time of the current turn (replays see the same time)."""
        return current_runtime("agent.now()").now()

    def random(self) -> float:
        """A float in [0, 1) that is the same when the agent's code is replayed."""
        return current_runtime("agent.random()").random()

    def agent_info(self) -> AgentInfo:
        return current_runtime("agent.agent_info()").info()


Seconds = float | int | timedelta | None


def _seconds(value: Seconds) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _function_name(function: Callable[..., Any] | str) -> str:
    if isinstance(function, str):
        return function
    for name, definition in function_definitions().items():
        if definition.fn is function:
            return name
    return getattr(function, "__name__", repr(function))


def _agent_type_name(agent: type | str) -> str:
    if isinstance(agent, str):
        return agent
    for name, definition in agent_definitions().items():
        if definition.cls is agent:
            return name
    raise AgentDefinitionError(f"{agent!r} is not an agent type; decorate it with @agent.defn()")


def _child_args(
    agent: type | str | None, agent_id: str | None, agent_input: Any,
    workflow: type | str | None, workflow_id: str | None, workflow_input: Any,
) -> tuple[str, str | None, Any]:
    target = agent if agent is not None else workflow
    if target is None:
        raise AgentDefinitionError("name the child's agent type: agent=ChildAgent")
    child_input = agent_input if agent_input is not None else workflow_input
    return _agent_type_name(target), agent_id or workflow_id, to_jsonable_python(child_input)


async def condition(predicate: Callable[[], Any], timeout: float | timedelta | None = None) -> bool:
    """Wait until `predicate()` is true; it is checked after every change of the agent.

    With `timeout`, raises agentstream's TimeoutError if it stays false that long
    (a durable timer, like agent.sleep).
    """
    return await current_runtime("condition()").condition(predicate, _seconds(timeout))


agent = _AgentNamespace()

# Restack's module-level spellings: `from ... import step, uuid, agent_info, child_start`.
event = agent.event
step = agent.step
child_start = agent.child_start
child_execute = agent.child_execute
uuid = agent.uuid
agent_info = agent.agent_info
