"""The `agent` namespace of the authoring API: `@agent.defn`, `@agent.event`, `@agent.run`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from ._registry import AgentDefinition, EventDefinition, register_agent, single_parameter
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


agent = _AgentNamespace()
