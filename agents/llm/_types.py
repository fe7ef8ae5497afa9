"""The values an LLM agent takes and gives: messages in, decisions, run results out."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from ._calls import Usage

StopReason = Literal["done", "budget", "max_turns", "max_tool_calls"]


class UserMessage(BaseModel):
    """The payload of an LLM agent's `message` event: one user turn of the conversation."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    user: str | None = None  # whose memory the session uses (default: the session's agent ID)


class Decision(BaseModel):
    """The payload of `approve` / `reject`: which approval request, and why (optional)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1)
    reason: str | None = None


class Budget(BaseModel):
    """What one run may spend; the loop stops cleanly (stop_reason "budget") before a call that would start over it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: int | None = Field(default=None, ge=1)
    cost: float | None = Field(default=None, gt=0)

    def exhausted(self, usage: Usage) -> bool:
        return (self.tokens is not None and usage.total_tokens >= self.tokens) or (
            self.cost is not None and usage.cost >= self.cost
        )


class RunResult(BaseModel):
    """What one run of the loop (a message answered, or a task done) produced."""

    model_config = ConfigDict(extra="forbid")

    text: str  # the model's final answer (empty when the run stopped early)
    output: JsonValue = None  # the validated structured output, when the agent has an `output` type
    usage: Usage  # of this run, children included
    stop_reason: StopReason = "done"
    turns: int = 0  # model calls
    tool_calls: int = 0


class ApprovalRequest(BaseModel):
    """A tool call waiting for a human; shown in the agent's state and on its stream."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    tool: str
    arguments: dict[str, Any]
    tool_call_id: str
    run: int
    timeout_s: float | None = None
