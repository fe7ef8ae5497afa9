"""What `@agent.defn` and `@function` register: agent types and step functions by name.

Importing a user's module (`--app`) fills these registries; processors and workers
look definitions up by the names found on the wire.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from pydantic import PydanticUserError, TypeAdapter

from .exceptions import AgentDefinitionError, UnknownAgentTypeError


@dataclass(frozen=True)
class Parameter:
    """The single argument of a handler, run method or function, and how to validate it."""

    name: str
    adapter: TypeAdapter[Any] | None  # None when the parameter has no annotation
    optional: bool = False  # it has a default, used when no input (None) is given

    def validate(self, value: Any) -> Any:
        return value if self.adapter is None else self.adapter.validate_python(value)

    def describe(self) -> dict[str, Any]:
        """The input as `/agent-types` shows it: its JSON schema (`{}`: any JSON, no annotation)
        and whether it may be left out."""
        schema: dict[str, Any] = {}
        if self.adapter is not None:
            try:
                schema = self.adapter.json_schema()
            except PydanticUserError as exc:  # a type with no JSON schema (an arbitrary class)
                schema = {"description": f"not expressible as JSON schema: {exc}"}
        return {"name": self.name, "schema": schema, "optional": self.optional}

    def arguments(self, value: Any) -> list[Any]:
        """The positional arguments for a call with input `value`."""
        if value is None and self.optional:
            return []
        return [self.validate(value)]


def single_parameter(fn: Callable[..., Any], *, skip_self: bool) -> Parameter | None:
    """Describe `fn`'s one input argument (besides `self`), or None if it takes none."""
    params = list(inspect.signature(fn).parameters.values())
    if skip_self:
        params = params[1:]
    if not params:
        return None
    if len(params) > 1:
        raise AgentDefinitionError(
            f"{fn.__qualname__} takes {len(params)} arguments; agentstream passes one input "
            "(use a pydantic model to carry several values)"
        )
    hints = get_type_hints(fn)
    hint = hints.get(params[0].name)
    return Parameter(
        params[0].name,
        TypeAdapter(hint) if hint is not None else None,
        optional=params[0].default is not inspect.Parameter.empty,
    )


@dataclass(frozen=True)
class EventDefinition:
    name: str
    method_name: str
    parameter: Parameter | None


@dataclass(frozen=True)
class AgentDefinition:
    name: str
    cls: type
    run_method: str | None
    run_parameter: Parameter | None
    events: Mapping[str, EventDefinition] = field(default_factory=dict)


@dataclass(frozen=True)
class FunctionDefinition:
    name: str
    fn: Callable[..., Any]
    parameter: Parameter | None
    is_async: bool


_agents: dict[str, AgentDefinition] = {}
_functions: dict[str, FunctionDefinition] = {}


def register_agent(definition: AgentDefinition) -> None:
    existing = _agents.get(definition.name)
    if existing is not None and existing.cls.__qualname__ != definition.cls.__qualname__:
        raise AgentDefinitionError(
            f"agent type {definition.name!r} is defined twice ({existing.cls.__module__}."
            f"{existing.cls.__qualname__} and {definition.cls.__module__}.{definition.cls.__qualname__}); "
            "give one of them another name with @agent.defn(name=...)"
        )
    _agents[definition.name] = definition


def register_function(definition: FunctionDefinition) -> None:
    _functions[definition.name] = definition


def agent_definition(name: str) -> AgentDefinition:
    try:
        return _agents[name]
    except KeyError:
        known = ", ".join(sorted(_agents)) or "none (did you pass --app?)"
        raise UnknownAgentTypeError(f"unknown agent type {name!r}; registered: {known}") from None


def type_name(agent: str | type) -> str:
    """The registered name of an agent class (or the name itself, when given a string)."""
    if isinstance(agent, str):
        return agent
    for name, definition in _agents.items():
        if definition.cls is agent:
            return name
    return agent.__name__


def agent_definitions() -> Mapping[str, AgentDefinition]:
    return dict(_agents)


def function_definitions() -> Mapping[str, FunctionDefinition]:
    return dict(_functions)


def function_definition(name: str) -> FunctionDefinition | None:
    """One registered function, without copying the registry (the processor asks per local step)."""
    return _functions.get(name)


def describe_agent(definition: AgentDefinition) -> dict[str, Any]:
    """An agent type as `GET /agent-types` shows it: its events, and the JSON schema of the run's
    input and of each event's payload (None: it takes none)."""
    return {
        "events": sorted(definition.events),
        "input": definition.run_parameter.describe() if definition.run_parameter else None,
        "payloads": {name: (event.parameter.describe() if event.parameter else None)
                     for name, event in sorted(definition.events.items())},
    }
