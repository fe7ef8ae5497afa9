"""The step `agentstream.llm.call`: one model call through the `openai` client, on a worker.

The agent decides *what* to ask (agents/llm); this module only asks it, against any
OpenAI-compatible endpoint, and reports what came back. Rules that make the call
durable and honest:

- The client's own retries are off: a 429, a 5xx, a timeout or a cut connection fails
  the attempt with a `RetryableError` (carrying the server's `Retry-After`), so the
  step's retry policy retries it durably as a new attempt; any other 4xx is a
  `TerminalError` with the server's message, since asking again cannot help.
- Streamed calls put every text and tool-call delta on agent-stream as it arrives and
  ask for usage (`stream_options.include_usage`); a stream that ends before its usage
  chunk was cut, so the attempt failed. A new attempt first says `superseded`.
- A structured output is validated here against the pydantic type; an invalid one is
  sent back to the model with the error, within this step, a bounded number of times.
"""

from __future__ import annotations

import importlib
import os
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from agentstream.agents._function import function
from agentstream.agents._step_context import StepContext, current_step
from agentstream.agents.exceptions import RetryableError, TerminalError
from agentstream.agents.llm._calls import CALL_FUNCTION, Message, ModelCall, ModelResponse, OutputSpec, Usage
from agentstream.agents.llm._model import DEFAULT_BASE_URL_ENV, Model
from agentstream.streams import tracing

if TYPE_CHECKING:  # at run time `openai` is imported by the first model call: a worker starts without it
    import openai

_clients: dict[tuple[str | None, str, float], openai.AsyncOpenAI] = {}


def _client(model: Model) -> openai.AsyncOpenAI:
    import openai

    api_key = os.environ.get(model.api_key_env)
    base_url = model.base_url or os.environ.get(DEFAULT_BASE_URL_ENV) or None
    if not api_key:
        if base_url is None:
            raise TerminalError(
                f"no API key: set {model.api_key_env} on the worker (or point {DEFAULT_BASE_URL_ENV} at an "
                "OpenAI-compatible server that needs none)"
            )
        api_key = "unused"  # local OpenAI-compatible servers often need no key, but the client wants one
    key = (base_url, api_key, model.timeout_s)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=model.timeout_s
        )
    return client


def _retry_after(response: Any) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `retry-after` as seconds or a date)."""
    headers = getattr(response, "headers", None) or {}
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return exc.message


def _failure(exc: Exception, model: Model) -> Exception:
    """What a failed request becomes: retryable (worth another attempt) or terminal."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = f"{model.name}: the model API answered {status}: {_server_message(exc)}"
        if status in (408, 409, 429) or status >= 500:
            return RetryableError(message, retry_after=_retry_after(exc.response))
        return TerminalError(message)
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return RetryableError(f"{model.name}: {type(exc).__name__}: {exc}")
    return exc


def _usage(raw: Any, model: Model) -> Usage:
    if raw is None:
        return Usage(calls=1)
    details = getattr(raw, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
    prompt, completion = int(raw.prompt_tokens or 0), int(raw.completion_tokens or 0)
    cost = model.prices.cost(prompt, completion, cached) if model.prices is not None else 0.0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached, cost=cost, calls=1)


class _Answer:
    """One answer of the model, streamed or not, as an assistant message."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.usage: Any = None
        self.finish_reason: str | None = None
        self.model = ""
        self.first_token_s: float | None = None

    def message(self) -> Message:
        message: Message = {"role": "assistant", "content": "".join(self.content) or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": call["id"], "type": "function",
                 "function": {"name": call["name"], "arguments": call["arguments"] or "{}"}}
                for _, call in sorted(self.tool_calls.items())
            ]
        return message


async def _ask(call: ModelCall, messages: list[Message], context: StepContext | None, started: float) -> _Answer:
    import openai

    model = call.model
    request: dict[str, Any] = {"model": model.name, "messages": messages, **model.request_params()}
    if call.tools:
        request["tools"] = call.tools
    if call.output is not None:
        request["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": call.output.name, "schema": call.output.json_schema, "strict": True},
        }
    answer = _Answer()
    streaming = model.stream and context is not None and context.streams
    try:
        if not streaming:
            response = await _client(model).chat.completions.create(**request)
            choice = response.choices[0]
            answer.model, answer.usage, answer.finish_reason = response.model, response.usage, choice.finish_reason
            answer.content = [choice.message.content or ""]
            for index, tool in enumerate(choice.message.tool_calls or []):
                function_call = getattr(tool, "function", None)
                answer.tool_calls[index] = {"id": tool.id, "name": getattr(function_call, "name", ""),
                                            "arguments": getattr(function_call, "arguments", "")}
            return answer
        assert context is not None
        stream = await _client(model).chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
        async for chunk in stream:
            answer.model = chunk.model or answer.model
            if chunk.usage is not None:
                answer.usage = chunk.usage
            for choice in chunk.choices:
                if choice.finish_reason:
                    answer.finish_reason = choice.finish_reason
                delta = choice.delta
                if delta is None:
                    continue
                if delta.content:
                    answer.first_token_s = answer.first_token_s or time.perf_counter() - started
                    answer.content.append(delta.content)
                    await context.emit("text_delta", {"text": delta.content})
                for tool in delta.tool_calls or []:
                    answer.first_token_s = answer.first_token_s or time.perf_counter() - started
                    slot = answer.tool_calls.setdefault(tool.index, {"id": None, "name": "", "arguments": ""})
                    name = tool.function.name if tool.function is not None else None
                    arguments = tool.function.arguments if tool.function is not None else None
                    slot["id"] = tool.id or slot["id"]
                    slot["name"] += name or ""
                    slot["arguments"] += arguments or ""
                    await context.emit("tool_call_delta", {"index": tool.index, "id": tool.id, "name": name,
                                                           "arguments": arguments})
    except openai.OpenAIError as exc:
        raise _failure(exc, model) from exc
    if answer.usage is None:
        raise RetryableError(f"{model.name}: the stream ended before its usage chunk (the connection was cut)")
    return answer


def _validate(spec: OutputSpec, content: str) -> Any:
    module, _, qualname = spec.type_path.partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    adapter: TypeAdapter[Any] = TypeAdapter(target)
    return adapter.dump_python(adapter.validate_json(content), mode="json")


@function(name=CALL_FUNCTION)
async def call_model(call: ModelCall) -> ModelResponse:
    """Ask the model once (more for an invalid structured output); see the module docstring."""
    context = current_step()
    if context is not None and context.attempt > 1 and call.model.stream:
        await context.emit("superseded", {"attempt": context.attempt - 1})
    started = time.perf_counter()
    with tracing.span(f"llm.call {call.model.name}", {"gen_ai.request.model": call.model.name}) as span:
        response = await _answer(call, context, started)
        span.set_attributes({"gen_ai.response.model": response.model, "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
                             "gen_ai.usage.output_tokens": response.usage.completion_tokens,
                             "gen_ai.response.finish_reasons": [response.finish_reason or ""]})
        return response


async def _answer(call: ModelCall, context: StepContext | None, started: float) -> ModelResponse:
    """The model's answer, asked again (up to `output_retries`) while its structured output is invalid."""
    messages = list(call.messages)
    usage = Usage()
    for asked in range(1, call.output_retries + 2):
        answer = await _ask(call, messages, context, started)
        usage += _usage(answer.usage, call.model)
        message, output = answer.message(), None
        if call.output is not None and not answer.tool_calls:
            text = str(message.get("content") or "")
            try:
                output = _validate(call.output, text)
            except (ValidationError, ValueError) as exc:
                problem = str(exc)[:2000]
                if asked > call.output_retries:
                    raise TerminalError(
                        f"{call.model.name}: the structured output was still invalid after {asked} answers: {problem}"
                    ) from exc
                if context is not None and call.model.stream:  # what was streamed of this answer is void
                    await context.emit("superseded", {"attempt": context.attempt, "reason": "invalid_output"})
                messages += [message, {"role": "user", "content": (
                    f"That answer was not valid JSON for the schema {call.output.name}: {problem}\n"
                    "Answer again with only the JSON object."
                )}]
                continue
        return ModelResponse(
            message=message, output=output, usage=usage, model=answer.model or call.model.name,
            finish_reason=answer.finish_reason, latency_s=time.perf_counter() - started,
            first_token_s=answer.first_token_s, asked=asked,
        )
    raise AssertionError("unreachable: the loop returns or raises")


