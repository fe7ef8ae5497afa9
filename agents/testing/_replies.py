"""What a scripted model answers: text, tool calls, structured JSON or an HTTP error.

A `Reply` is a plain immutable value: tests write the conversation they expect up front
(`Reply.text(...)`, `Reply.tools(...)`, `Reply.rate_limited(...)`), and modifiers
(`.slow()`, `.cut()`, `.with_usage()`) return changed copies, so one base reply can be
reused with different failure modes. Values are checked when the reply is written, where
the mistake is, not when the server answers with it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HttpError", "Reply", "ToolCall", "Usage"]

# The error bodies the real API sends for these statuses (type, code, message).
_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asks for.

    `arguments` is a JSON object (sent as its JSON text) or a string sent verbatim, so a
    test can script arguments that are not valid JSON. `id` defaults to a fresh
    `call_...` ID at answer time; set it when a test must know it in advance.
    """

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        """The arguments exactly as they go on the wire."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), ensure_ascii=False)


@dataclass(frozen=True)
class Usage:
    """Token counts reported for one completion (cached tokens are part of the prompt tokens)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    def __post_init__(self) -> None:
        if min(self.prompt_tokens, self.completion_tokens, self.cached_tokens) < 0:
            raise ValueError(f"token counts cannot be negative: {self}")
        if self.cached_tokens > self.prompt_tokens:
            raise ValueError(f"cached_tokens ({self.cached_tokens}) exceed prompt_tokens ({self.prompt_tokens})")


@dataclass(frozen=True)
class HttpError:
    """An error answer: the status, the OpenAI-style error body, and an optional `Retry-After` (seconds)."""

    status: int
    message: str
    type: str
    code: str | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"an error reply needs a 4xx or 5xx status, not {self.status}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after cannot be negative: {self.retry_after}")

    def body(self) -> dict[str, Any]:
        """The JSON body the real API sends with an error status."""
        return {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}


@dataclass(frozen=True)
class Reply:
    """One scripted answer to one chat completion request.

    Content and tool calls may be combined (the model may talk before it calls tools).
    `finish_reason` defaults to `tool_calls` when there are tool calls, else `stop`.
    `usage` defaults to counts computed from the request's and the reply's lengths.
    `token_delay` waits before each streamed token (a non-streamed reply waits for all
    of them); `delay` waits before the response starts (time to first byte); `cut_after`
    closes the connection after that many streamed chunks (a non-streamed reply is cut
    before any byte of its response).
    """

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    error: HttpError | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    token_delay: float = 0.0
    delay: float = 0.0
    cut_after: int | None = None

    def __post_init__(self) -> None:
        if self.token_delay < 0 or self.delay < 0:
            raise ValueError(f"delays cannot be negative: token_delay={self.token_delay}, delay={self.delay}")
        if self.cut_after is not None and self.cut_after < 0:
            raise ValueError(f"cut after a negative number of chunks: {self.cut_after}")
        if self.error is not None and (self.content is not None or self.tool_calls):
            raise ValueError("an error reply carries no content or tool calls")

    # Kinds of reply.

    @classmethod
    def text(cls, content: str) -> Reply:
        """The model answers with `content` and stops."""
        return cls(content=content)

    @classmethod
    def tools(cls, *calls: ToolCall, content: str | None = None) -> Reply:
        """The model asks for one or several tool calls (in parallel), optionally after some text."""
        if not calls:
            raise ValueError("Reply.tools needs at least one ToolCall")
        return cls(content=content, tool_calls=tuple(calls))

    @classmethod
    def structured(cls, value: Any) -> Reply:
        """JSON content for a `response_format` request: a pydantic model, a JSON value, or a string verbatim."""
        if isinstance(value, str):
            return cls(content=value)
        dump = getattr(value, "model_dump_json", None)
        if callable(dump):
            return cls(content=str(dump()))
        return cls(content=json.dumps(value, ensure_ascii=False))

    @classmethod
    def http_error(
        cls,
        status: int,
        message: str | None = None,
        *,
        type: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> Reply:
        """An error status with the real API's error body; type/code/message default per status."""
        default_type, default_code, default_message = _ERROR_DEFAULTS.get(
            status, ("invalid_request_error" if status < 500 else "server_error", None, f"Error {status}.")
        )
        error = HttpError(
            status=status,
            message=default_message if message is None else message,
            type=default_type if type is None else type,
            code=default_code if code is None else code,
            retry_after=retry_after,
        )
        return cls(error=error)

    @classmethod
    def rate_limited(cls, retry_after: float | None = None, message: str | None = None) -> Reply:
        """429 `rate_limit_exceeded`, with a `Retry-After` header (seconds) when given."""
        return cls.http_error(429, message, retry_after=retry_after)

    @classmethod
    def server_error(cls, message: str | None = None, status: int = 500) -> Reply:
        """A 5xx `server_error` (the client retries these)."""
        if status < 500:
            raise ValueError(f"a server error needs a 5xx status, not {status}")
        return cls.http_error(status, message)

    @classmethod
    def bad_request(cls, message: str, code: str | None = None) -> Reply:
        """400 `invalid_request_error` with the message the client must surface."""
        return cls.http_error(400, message, code=code)

    # Modifiers.

    def slow(self, token_delay: float) -> Reply:
        """The same reply, waiting `token_delay` seconds before each token."""
        return dataclasses.replace(self, token_delay=token_delay)

    def delayed(self, seconds: float) -> Reply:
        """The same reply, starting only after `seconds` (for client timeouts)."""
        return dataclasses.replace(self, delay=seconds)

    def cut(self, after_chunks: int) -> Reply:
        """The same reply, its connection closed after `after_chunks` streamed chunks."""
        return dataclasses.replace(self, cut_after=after_chunks)

    def with_usage(self, prompt: int, completion: int, cached: int = 0) -> Reply:
        """The same reply, reporting these token counts instead of computed ones."""
        return dataclasses.replace(self, usage=Usage(prompt, completion, cached))

    def finishing(self, reason: str) -> Reply:
        """The same reply with another finish reason (e.g. `length`, `content_filter`)."""
        return dataclasses.replace(self, finish_reason=reason)

    @property
    def resolved_finish_reason(self) -> str:
        """The finish reason sent: the scripted one, else `tool_calls` or `stop`."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"
