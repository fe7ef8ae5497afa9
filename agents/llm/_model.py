"""`Model`: which OpenAI-compatible model an LLM agent talks to, and how.

A `Model` is plain data: it travels inside every model-call step, so the worker that
makes the call needs nothing but the step. The API key never does: only the *name* of
the environment variable that holds it is in the step, and the worker reads it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from agentstream.agents._policy import RetryPolicy

DEFAULT_BASE_URL_ENV = "AGENTSTREAM_LLM_BASE_URL"


class Prices(BaseModel):
    """US dollars per million tokens; cached prompt tokens are billed at `cached_input` when set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached = min(cached_tokens, prompt_tokens) if self.cached_input is not None else 0
        cached_price = self.cached_input if self.cached_input is not None else self.input
        return ((prompt_tokens - cached) * self.input + cached * cached_price + completion_tokens * self.output) / 1e6


class Model(BaseModel):
    """An OpenAI-compatible chat model.

    `base_url` None means the value of `AGENTSTREAM_LLM_BASE_URL` on the worker, else
    OpenAI's own API. Failures worth retrying (429, 5xx, timeouts, a cut connection) are
    retried durably as new attempts of the step, honouring the server's `Retry-After`;
    other 4xx answers fail the call at once with the server's message.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    params: dict[str, JsonValue] = Field(default_factory=dict)  # any other request parameter, sent as is
    timeout_s: float = Field(default=60.0, gt=0)
    stream: bool = True  # stream tokens to agent-stream while the model generates
    max_attempts: int = Field(default=5, ge=1)
    prices: Prices | None = None

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                           max_interval=timedelta(seconds=30), max_attempts=self.max_attempts)

    def request_params(self) -> dict[str, Any]:
        params: dict[str, Any] = dict(self.params)
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        return params
