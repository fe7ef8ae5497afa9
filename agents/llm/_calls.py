"""What a model-call step carries to the worker and brings back: plain, journaled JSON.

The agent builds a `ModelCall` (the model, the bounded message list, the tools'
schemas, the output schema) and runs it as the step `agentstream.llm.call`; the worker
answers with a `ModelResponse`, which the journal keeps, so a replay never calls the
model again.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from ._model import Model

CALL_FUNCTION = "agentstream.llm.call"

Message = dict[str, JsonValue]  # one chat message in the OpenAI format


class OutputSpec(BaseModel):
    """A structured output: the pydantic type (as `module:QualName`, for the worker to validate) and its strict schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type_path: str
    json_schema: dict[str, JsonValue]


class ModelCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Model
    messages: list[Message]
    tools: list[dict[str, JsonValue]] = Field(default_factory=list)
    output: OutputSpec | None = None
    output_retries: int = Field(default=2, ge=0)  # re-asks within the step on an invalid output


class Usage(BaseModel):
    """Tokens and cost, of one call or summed over many (`calls` counts them)."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost: float = 0.0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            cost=self.cost + other.cost,
            calls=self.calls + other.calls,
        )


class ModelResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: Message  # the assistant message: content and/or tool_calls
    output: JsonValue = None  # the validated structured output, when one was asked for
    usage: Usage
    model: str
    finish_reason: str | None = None
    latency_s: float = 0.0
    first_token_s: float | None = None
    asked: int = 1  # requests made (1 + re-asks after an invalid structured output)

    @property
    def content(self) -> str:
        content = self.message.get("content")
        return content if isinstance(content, str) else ""

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        calls = self.message.get("tool_calls")
        return [call for call in calls if isinstance(call, dict)] if isinstance(calls, list) else []


def strict_schema(schema: Any) -> Any:
    """`schema` as OpenAI's strict structured outputs want it: closed objects, every property required.

    pydantic generates the schema; this only tightens what strict mode insists on.
    """
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tightened: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            tightened[key] = {name: strict_schema(item) for name, item in value.items()}  # maps of schemas
        elif key != "default":  # strict mode rejects defaults
            tightened[key] = strict_schema(value)
    if tightened.get("type") == "object" and isinstance(tightened.get("properties"), dict):
        tightened["additionalProperties"] = False
        tightened["required"] = list(tightened["properties"])
    return tightened
