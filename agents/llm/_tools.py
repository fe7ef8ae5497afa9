"""Tools: plain typed Python functions an LLM agent offers the model.

`@tool` reads the function's signature and docstring once: pydantic builds the
arguments' model (so the JSON schema and the validation come from the type hints), the
docstring's first paragraph describes the tool and its `Args:` lines describe the
parameters. The function is registered as a step function (`tool.<name>`), so a worker
runs each call as a durable step. A parameter annotated `StepContext` is not shown to
the model: it receives the step's context (its `idempotency_key` is the same in every
attempt of the call, for side effects).

A tool's exception goes back to the model as an error message, since the model can
often recover (ask again, try something else); a `TerminalError` fails the call and the
agent's run; a `RetryableError` is retried as a new attempt of the step.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import to_jsonable_python

from agentstream.agents._function import function
from agentstream.agents._policy import RetryPolicy
from agentstream.agents._step_context import StepContext, step_context
from agentstream.agents.exceptions import AgentDefinitionError, RetryableError, TerminalError

F = TypeVar("F", bound=Callable[..., Any])

TOOL_PREFIX = "tool."
_ARGS = re.compile(r"^\s*(?:Args|Arguments|Parameters):\s*$", re.IGNORECASE)
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


class ToolArgumentsError(ValueError):
    """The model's arguments for a tool are not valid JSON or do not fit the tool's parameters."""


@dataclass(frozen=True)
class Tool:
    """One tool as offered to the model and run by the agent.

    `function` is the step function that runs it on a worker; `agent_type` instead names
    a child agent that runs it (`agent_tool`); `memory` marks the memory tools.
    """

    name: str
    description: str
    arguments: type[BaseModel]
    function: str | None = None
    agent_type: str | None = None
    needs_approval: bool = False
    approval_timeout_s: float | None = None
    start_to_close_timeout_s: float | None = None
    retry_policy: RetryPolicy | None = None
    memory: Literal["remember", "recall"] | None = None  # one of the memory tools (agents/llm/_memory.py)
    context_parameter: str | None = field(default=None, repr=False)

    def schema(self) -> dict[str, Any]:
        """The tool as the OpenAI chat API wants it in `tools`."""
        parameters = self.arguments.model_json_schema()
        parameters.pop("title", None)
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": parameters}}

    def validate(self, arguments_json: str) -> dict[str, Any]:
        """The model's arguments, checked against the parameters, as JSON; raises ToolArgumentsError."""
        try:
            arguments = self.arguments.model_validate_json(arguments_json or "{}")
        except ValidationError as exc:
            raise ToolArgumentsError(_short(exc)) from None
        return arguments.model_dump(mode="json")


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}" for error in exc.errors()
    )[:1000]


def _docs(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The description (first paragraph) and per-parameter descriptions (an `Args:` section)."""
    doc = inspect.getdoc(fn) or ""
    paragraphs = doc.split("\n\n")
    description = " ".join(paragraphs[0].split()) if doc else ""
    params: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in doc.splitlines():
        if _ARGS.match(line):
            in_args = True
            continue
        if not in_args:
            continue
        if not line.strip():
            current = None
            continue
        match = _ARG_LINE.match(line)
        if match and (current is None or len(line) - len(line.lstrip()) <= 4):
            current = match.group(1).lstrip("*")
            params[current] = match.group(2).strip()
        elif current is not None:
            params[current] = f"{params[current]} {line.strip()}".strip()
        else:
            in_args = False
    return description, params


def _arguments_model(fn: Callable[..., Any], name: str) -> tuple[type[BaseModel], str | None]:
    hints = get_type_hints(fn, include_extras=True)
    _, described = _docs(fn)
    fields: dict[str, Any] = {}
    context: str | None = None
    for parameter in inspect.signature(fn).parameters.values():
        hint = hints.get(parameter.name, Any)
        if hint is StepContext:
            context = parameter.name
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise AgentDefinitionError(f"tool {name}: *args and **kwargs cannot be described to a model")
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (hint, Field(default, description=described.get(parameter.name)))
    model = create_model(
        f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model, context


@overload
def tool(fn: F) -> F: ...
@overload
def tool(
    fn: None = None, *, name: str | None = None, description: str | None = None, needs_approval: bool = False,
    approval_timeout: float | timedelta | None = None, start_to_close_timeout: float | timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
) -> Callable[[F], F]: ...


def tool(
    fn: F | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: bool = False,
    approval_timeout: float | timedelta | None = None,
    start_to_close_timeout: float | timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
) -> F | Callable[[F], F]:
    """Make a typed function (sync or async) a tool; the function itself stays callable as before.

    `needs_approval`: the agent asks a human before each call and waits, durably, for an
    approve or reject event (`approval_timeout`, if set, counts as a rejection).
    """

    def decorate(fn: F) -> F:
        tool_name = name or fn.__name__
        arguments, context = _arguments_model(fn, tool_name)
        summary, _ = _docs(fn)
        definition = Tool(
            name=tool_name,
            description=description or summary or tool_name,
            arguments=arguments,
            function=TOOL_PREFIX + tool_name,
            needs_approval=needs_approval,
            approval_timeout_s=_seconds(approval_timeout),
            start_to_close_timeout_s=_seconds(start_to_close_timeout),
            retry_policy=retry_policy,
            context_parameter=context,
        )
        function(name=TOOL_PREFIX + tool_name)(_runner(fn, definition))
        fn.__agentstream_tool__ = definition  # type: ignore[attr-defined]
        return fn

    return decorate(fn) if fn is not None else decorate


def tool_of(value: Any) -> Tool:
    """The `Tool` of a `@tool` function (or a `Tool` itself)."""
    if isinstance(value, Tool):
        return value
    definition = getattr(value, "__agentstream_tool__", None)
    if definition is None:
        raise AgentDefinitionError(f"{value!r} is not a tool: decorate it with @tool or use agent_tool(...)")
    return definition  # type: ignore[no-any-return]


def _call_arguments(definition: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    parsed = definition.arguments.model_validate(arguments)
    kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
    if definition.context_parameter is not None:
        kwargs[definition.context_parameter] = step_context()
    return kwargs


def _outcome(value: Any) -> dict[str, Any]:
    return {"ok": True, "value": to_jsonable_python(value, fallback=repr)}


def _error(exc: Exception) -> dict[str, Any]:
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:4000]}


def _runner(fn: Callable[..., Any], definition: Tool) -> Callable[[dict[str, Any]], Any]:
    """The step function that runs `fn` for one tool call: an error becomes a message for the model."""
    if inspect.iscoroutinefunction(fn):
        async def run_async(arguments: dict[str, Any]) -> dict[str, Any]:
            try:
                return _outcome(await fn(**_call_arguments(definition, arguments)))
            except (TerminalError, RetryableError):
                raise
            except Exception as exc:
                return _error(exc)

        run_async.__name__ = definition.name
        return run_async

    def run_sync(arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            return _outcome(fn(**_call_arguments(definition, arguments)))
        except (TerminalError, RetryableError):
            raise
        except Exception as exc:
            return _error(exc)

    run_sync.__name__ = definition.name
    return run_sync


def agent_tool(
    agent: Any, *, name: str | None = None, description: str, needs_approval: bool = False
) -> Tool:
    """Offer another agent (an `LLMAgent`, an agent class or type name) as a tool.

    Each call runs it as a child agent with the task as input and waits for its result.

    The child's result is the tool's result; an LLM child's usage counts toward the caller's.
    """
    from agentstream.agents._agent import _agent_type_name

    agent_type = _agent_type_name(getattr(agent, "agent_class", agent))  # an LLMAgent, or an agent class / name
    tool_name = name or re.sub(r"\W", "_", agent_type)
    arguments = create_model(
        f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"),
        task=(str, Field(description="What the agent should do, self-contained.")),
    )
    return Tool(name=tool_name, description=description, arguments=arguments, agent_type=agent_type,
                needs_approval=needs_approval)


def _seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
