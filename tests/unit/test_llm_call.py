"""The step `agentstream.llm.call` on its own: the real `openai` client against `ScriptedLLM` over HTTP.

What a worker does for one attempt of a model call: streamed deltas go to the step's
stream (here a list), usage is read from the final chunk, failures are classified as
retryable (429 with Retry-After, 5xx, a cut stream) or terminal (other 4xx, with the
server's message), and an invalid structured output is asked again within the step.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from agentstream.agents._step_context import StepContext
from agentstream.agents._step_context import _current as current_context
from agentstream.agents.exceptions import RetryableError, TerminalError
from agentstream.agents.llm import Model, Prices
from agentstream.agents.llm._calls import ModelCall, OutputSpec, strict_schema
from agentstream.agents.testing import Reply, ScriptedLLM, ToolCall
from agentstream.streams.worker.llm import call_model


class Review(BaseModel):
    title: str
    rating: int


REVIEW = OutputSpec(name="Review", type_path=f"{__name__}:Review",
                    json_schema=strict_schema(Review.model_json_schema()))


@pytest.fixture
def events() -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []
    yield seen


def in_step(events: list[tuple[str, Any]], attempt: int = 1) -> contextvars.Context:
    async def emit(type: str, data: Any) -> None:
        events.append((type, data))

    context = contextvars.copy_context()
    context.run(current_context.set, StepContext("a1", "r1", "s1", attempt, "agentstream.llm.call", emit))
    return context


async def run(call: ModelCall, context: contextvars.Context) -> Any:
    import asyncio

    return await asyncio.get_running_loop().create_task(call_model(call), context=context)


def model(llm: ScriptedLLM, **options: Any) -> Model:
    return Model(name="m", base_url=llm.base_url, api_key_env="AGENTSTREAM_TEST_NO_SUCH_KEY", **options)


USER = [{"role": "user", "content": "hi"}]


async def test_a_streamed_answer_reaches_the_stream_and_reports_usage_and_cost(events: list[Any]) -> None:
    async with ScriptedLLM([Reply.text("Hello there, traveller").with_usage(12, 5, cached=2)]) as llm:
        prices = Prices(input=1.0, output=2.0, cached_input=0.5)
        response = await run(ModelCall(model=model(llm, prices=prices), messages=USER), in_step(events))
        request = llm.requests[0]
    assert request.stream and request.body["stream_options"] == {"include_usage": True}
    assert response.content == "Hello there, traveller"
    assert "".join(d["text"] for t, d in events if t == "text_delta") == "Hello there, traveller"
    assert len([t for t, _ in events if t == "text_delta"]) > 1
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.cached_tokens) == (12, 5, 2)
    assert response.usage.cost == pytest.approx((10 * 1.0 + 2 * 0.5 + 5 * 2.0) / 1e6)
    assert response.first_token_s is not None and response.first_token_s <= response.latency_s


async def test_streamed_tool_calls_are_assembled_by_index(events: list[Any]) -> None:
    calls = (ToolCall("lookup", {"confirmation": "ABC"}, id="call_1"), ToolCall("seat", {"seat": "2A"}, id="call_2"))
    async with ScriptedLLM([Reply.tools(*calls)]) as llm:
        response = await run(ModelCall(model=model(llm), messages=USER), in_step(events))
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in response.tool_calls] == [
        ("call_1", "lookup", '{"confirmation": "ABC"}'), ("call_2", "seat", '{"seat": "2A"}'),
    ]
    assert any(t == "tool_call_delta" for t, _ in events)


async def test_without_a_stream_the_call_is_not_streamed(events: list[Any]) -> None:
    async with ScriptedLLM([Reply.text("plain")]) as llm:
        response = await run(ModelCall(model=model(llm, stream=False), messages=USER), in_step(events))
        assert not llm.requests[0].stream
    assert response.content == "plain" and events == []


async def test_a_429_is_retryable_with_the_servers_retry_after(events: list[Any]) -> None:
    async with ScriptedLLM([Reply.rate_limited(retry_after=7)]) as llm:
        with pytest.raises(RetryableError) as raised:
            await run(ModelCall(model=model(llm), messages=USER), in_step(events))
        assert len(llm.requests) == 1  # the client's own retries are off: the step retries durably
    assert raised.value.retry_after == 7
    assert "429" in str(raised.value)


async def test_a_500_is_retryable_and_a_400_is_terminal_with_the_servers_message(events: list[Any]) -> None:
    async with ScriptedLLM([Reply.server_error(), Reply.bad_request("messages[0].content is too long")]) as llm:
        with pytest.raises(RetryableError):
            await run(ModelCall(model=model(llm), messages=USER), in_step(events))
        with pytest.raises(TerminalError, match="messages\\[0\\].content is too long"):
            await run(ModelCall(model=model(llm), messages=USER), in_step(events))


async def test_a_stream_cut_before_its_usage_chunk_is_a_failed_attempt(events: list[Any]) -> None:
    async with ScriptedLLM([Reply.text("a long answer that is cut").cut(after_chunks=2)]) as llm:
        with pytest.raises(RetryableError, match="usage|connection|Connection"):
            await run(ModelCall(model=model(llm), messages=USER), in_step(events))


async def test_a_retried_attempt_first_says_the_previous_one_is_superseded(events: list[Any]) -> None:
    async with ScriptedLLM([Reply.text("again")]) as llm:
        await run(ModelCall(model=model(llm), messages=USER), in_step(events, attempt=3))
    assert events[0] == ("superseded", {"attempt": 2})


async def test_an_invalid_structured_output_is_asked_again_within_the_step(events: list[Any]) -> None:
    script = [Reply.text('{"title": "Dune"}'), Reply.structured({"title": "Dune", "rating": 9})]
    async with ScriptedLLM(script) as llm:
        response = await run(ModelCall(model=model(llm), messages=USER, output=REVIEW), in_step(events))
        requests = llm.requests
    assert response.output == {"title": "Dune", "rating": 9} and response.asked == 2
    assert requests[0].response_format == {
        "type": "json_schema", "json_schema": {"name": "Review", "schema": REVIEW.json_schema, "strict": True}}
    assert REVIEW.json_schema["additionalProperties"] is False
    assert "rating" in requests[1].messages[-1]["content"]  # the model was told what was wrong
    assert ("superseded", {"attempt": 1, "reason": "invalid_output"}) in events
    assert response.usage.calls == 2


async def test_structured_output_gives_up_after_its_bound(events: list[Any]) -> None:
    async with ScriptedLLM([Reply.text("not json")] * 2) as llm:
        with pytest.raises(TerminalError, match="still invalid after 2 answers"):
            await run(ModelCall(model=model(llm), messages=USER, output=REVIEW, output_retries=1), in_step(events))


async def test_no_key_and_no_base_url_is_a_clear_terminal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTSTREAM_LLM_BASE_URL", raising=False)
    with pytest.raises(TerminalError, match="set AGENTSTREAM_TEST_NO_SUCH_KEY"):
        await call_model(ModelCall(model=Model(name="m", api_key_env="AGENTSTREAM_TEST_NO_SUCH_KEY"), messages=USER))
