"""`LLMAgent`: declare an LLM agent (model, instructions, tools, output) as one value.

Declaring it registers a durable agent type under `name` (the session of
`_session.py`), so it is scheduled, messaged, inspected and crashed like any other
agent: `client.schedule_agent(name, agent_id=conversation_id)` opens a session,
`message` events are user turns, `approve` / `reject` decide approval requests; with a
task as input it answers once and completes (`client.schedule_agent(name, input=task)`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter

from agentstream.agents._agent import agent
from agentstream.agents.exceptions import AgentDefinitionError

from ._calls import OutputSpec, strict_schema
from ._history import HistoryPolicy
from ._memory import Memory, memory_tools
from ._model import Model
from ._session import LLMSession
from ._tools import Tool, tool_of
from ._types import Budget


class LLMAgent:
    """An LLM agent type. Every model call and tool call it makes is a durable step."""

    def __init__(
        self,
        name: str,
        *,
        model: Model,
        instructions: str = "",
        tools: Iterable[Any] = (),
        output: type | None = None,
        output_retries: int = 2,
        history: HistoryPolicy | None = None,
        budget: Budget | None = None,
        max_turns: int = 10,
        max_tool_calls: int = 20,
        task_queue: str | None = None,
        memory: Memory | None = None,
    ) -> None:
        """`tools`: `@tool` functions or `agent_tool(...)`; `output`: a pydantic type for structured answers;
        `max_turns` / `max_tool_calls` bound one run; `task_queue` is where its steps run;
        `memory` adds the `remember` / `recall` tools over the user's memory agent."""
        self.name = name
        self.model = model
        self.instructions = instructions
        self.tools: dict[str, Tool] = {}
        self.memory = memory
        for value in [*tools, *(memory_tools() if memory is not None else [])]:
            definition = tool_of(value)
            if definition.name in self.tools:
                raise AgentDefinitionError(f"LLMAgent {name}: two tools are called {definition.name!r}")
            self.tools[definition.name] = definition
        self.output = output
        self.output_spec = _output_spec(output) if output is not None else None
        self.output_retries = output_retries
        self.history = history or HistoryPolicy()
        self.budget = budget
        self.max_turns = max_turns
        self.max_tool_calls = max_tool_calls
        self.task_queue = task_queue
        self.agent_class = _register(self)

    def __repr__(self) -> str:
        return f"LLMAgent({self.name!r}, model={self.model.name!r}, tools={sorted(self.tools)})"

    def parse(self, output: Any) -> Any:
        """The typed structured output from a `RunResult.output` (JSON, as journaled)."""
        if self.output is None:
            raise AgentDefinitionError(f"LLMAgent {self.name} has no output type")
        return TypeAdapter(self.output).validate_python(output)


def _output_spec(output: type) -> OutputSpec:
    module, qualname = output.__module__, output.__qualname__
    if "<locals>" in qualname:
        raise AgentDefinitionError(
            f"the output type {qualname} must be defined at module level: the worker imports it to validate answers"
        )
    return OutputSpec(
        name=getattr(output, "__name__", "output")[:64],
        type_path=f"{module}:{qualname}",
        json_schema=strict_schema(TypeAdapter(output).json_schema()),
    )


def _register(spec: LLMAgent) -> type:
    """A copy of the session template bound to `spec`, registered as agent type `spec.name`.

    A copy, not a subclass: `@agent.defn` finds the run method and handlers in the class's
    own namespace, and each LLM agent type must be its own class.
    """
    namespace = {key: value for key, value in vars(LLMSession).items() if key not in ("__dict__", "__weakref__")}
    namespace["spec"] = spec
    namespace["__qualname__"] = f"LLMAgent[{spec.name}]"
    cls = type(f"LLMAgent[{spec.name}]", (), namespace)
    return agent.defn(name=spec.name)(cls)
