"""`ScriptedLLM`: the scripted OpenAI-compatible server users and our tests talk to.

Every test drives it with the real `openai` client over HTTP (or reads the raw bytes
with aiohttp when the wire format itself is the subject), so what passes here is what
the real client accepts from the real API.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import openai
import pydantic
import pytest
from openai import AsyncOpenAI
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from agentstream.agents.testing import Reply, ScriptedLLM, ToolCall, Usage

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]


@asynccontextmanager
async def client_of(llm: ScriptedLLM, max_retries: int = 0) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=llm.base_url, api_key="sk-test-secret", max_retries=max_retries) as client:
        yield client


def strict_tool(name: str, properties: dict[str, Any]) -> ChatCompletionFunctionToolParam:
    return {
        "type": "function",
        "function": {
            "name": name,
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": sorted(properties),
                "additionalProperties": False,
            },
        },
    }


async def raw_events(llm: ScriptedLLM, body: dict[str, Any]) -> list[str]:
    """The `data:` payloads of a streamed answer, read off the wire without the openai client."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{llm.base_url}/chat/completions", json=body) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            text = await response.text()
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(event.startswith("data: ") for event in events), events
    return [event.removeprefix("data: ") for event in events]


async def test_a_text_reply_comes_back_whole_without_streaming() -> None:
    async with ScriptedLLM([Reply.text("Hi! How can I help?")]) as llm, client_of(llm) as client:
        completion = await client.chat.completions.create(model="gpt-test", messages=USER)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-test"
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", "Hi! How can I help?", "stop")
    assert choice.message.tool_calls is None
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_a_streamed_text_reply_concatenates_to_the_text_and_ends_with_a_usage_chunk() -> None:
    text = "The quick brown fox jumps over the lazy dog."
    script = [Reply.text(text).with_usage(prompt=120, completion=11, cached=64)]
    async with ScriptedLLM(script) as llm, client_of(llm) as client:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) > 3 and "".join(contents) == text
    *body, final, usage_chunk = chunks
    assert [c.choices[0].finish_reason for c in body] == [None] * len(body)
    assert final.choices[0].finish_reason == "stop" and final.usage is None
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens, usage_chunk.usage.total_tokens) == (120, 11, 131)
    assert usage_chunk.usage.prompt_tokens_details is not None
    assert usage_chunk.usage.prompt_tokens_details.cached_tokens == 64


async def test_a_stream_without_include_usage_has_no_usage_chunk_and_ends_in_done() -> None:
    async with ScriptedLLM([Reply.text("one two")]) as llm:
        events = await raw_events(llm, {"model": "m", "messages": USER, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["choices"] for chunk in chunks)
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


async def test_streamed_tool_call_deltas_carry_id_and_name_only_in_their_first_delta() -> None:
    calls = [ToolCall("get_weather", {"city": "Paris"}, id="call_a"), ToolCall("get_time", {"zone": "Europe/Paris"}, id="call_b")]
    body = {"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    async with ScriptedLLM([Reply.tools(*calls)]) as llm:
        events = await raw_events(llm, body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    deltas = [d for chunk in chunks[:-2] for d in chunk["choices"][0]["delta"].get("tool_calls", [])]
    for index, call in enumerate(calls):
        mine = [d for d in deltas if d["index"] == index]
        first, rest = mine[0], mine[1:]
        assert (first["id"], first["type"], first["function"]["name"]) == (call.id, "function", call.name)
        assert rest and all(set(d) == {"index", "function"} and set(d["function"]) == {"arguments"} for d in rest)
        arguments = "".join(d["function"].get("arguments", "") for d in mine)
        assert json.loads(arguments) == call.arguments


async def test_parallel_tool_calls_stream_into_the_clients_accumulated_tool_calls() -> None:
    tools = [strict_tool("get_weather", {"city": {"type": "string"}}), strict_tool("get_time", {"zone": {"type": "string"}})]
    script = [Reply.tools(ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_time", {"zone": "UTC"}))]
    async with ScriptedLLM(script) as llm, client_of(llm) as client:
        async with client.chat.completions.stream(model="m", messages=USER, tools=tools) as stream:
            completion = await stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.function.name, c.function.parsed_arguments) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"zone": "UTC"}),
    ]
    assert all(c.id.startswith("call_") for c in calls) and len({c.id for c in calls}) == 2


async def test_tool_calls_come_back_whole_without_streaming() -> None:
    script = [Reply.tools(ToolCall("lookup", {"booking": "ABC123"}, id="call_1"), content="Let me check.")]
    async with ScriptedLLM(script) as llm, client_of(llm) as client:
        completion = await client.chat.completions.create(model="m", messages=USER)
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls" and message.content == "Let me check."
    calls = [c for c in message.tool_calls or [] if isinstance(c, ChatCompletionMessageFunctionToolCall)]
    assert [(c.id, c.type, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_1", "function", "lookup", {"booking": "ABC123"})
    ]


async def test_a_429_with_retry_after_surfaces_as_a_rate_limit_error_when_the_client_does_not_retry() -> None:
    async with ScriptedLLM([Reply.rate_limited(retry_after=7)]) as llm, client_of(llm) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="m", messages=USER)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit_exceeded"
    assert "Rate limit" in caught.value.message


async def test_the_client_retries_a_429_after_its_retry_after_and_gets_the_next_reply() -> None:
    script = [Reply.rate_limited(retry_after=0.3), Reply.text("after the wait")]
    async with ScriptedLLM(script) as llm, client_of(llm, max_retries=1) as client:
        started = time.monotonic()
        completion = await client.chat.completions.create(model="m", messages=USER)
        waited = time.monotonic() - started
    assert completion.choices[0].message.content == "after the wait"
    assert len(llm.requests) == 2 and llm.remaining == 0
    assert waited >= 0.3


async def test_a_500_surfaces_as_an_internal_server_error() -> None:
    async with ScriptedLLM([Reply.server_error()]) as llm, client_of(llm) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="m", messages=USER, stream=True)
    assert caught.value.status_code == 500
    assert caught.value.type == "server_error"


async def test_a_400_surfaces_the_servers_message() -> None:
    script = [Reply.bad_request("Invalid schema for function 'lookup'", code="invalid_function_parameters")]
    async with ScriptedLLM(script) as llm, client_of(llm, max_retries=2) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="m", messages=USER)
    assert "Invalid schema for function 'lookup'" in caught.value.message
    assert (caught.value.code, caught.value.type) == ("invalid_function_parameters", "invalid_request_error")
    assert caught.value.body == {
        "message": "Invalid schema for function 'lookup'",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_function_parameters",
    }
    assert len(llm.requests) == 1  # a 400 is not retried


async def test_a_stream_cut_mid_way_raises_in_the_client_after_the_chunks_before_the_cut() -> None:
    script = [Reply.text("a b c d e f g h i j").cut(after_chunks=3)]
    received: list[str] = []
    async with ScriptedLLM(script) as llm, client_of(llm) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(openai.APIConnectionError):
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert received == ["", "a", " b"]


async def test_a_cut_before_a_non_streamed_response_fails_the_attempt_and_a_retry_gets_the_next_reply() -> None:
    script = [Reply.text("lost").cut(after_chunks=0), Reply.text("lost again").cut(after_chunks=0), Reply.text("kept")]
    async with ScriptedLLM(script) as llm:
        async with client_of(llm) as client:
            with pytest.raises(openai.APIConnectionError):
                await client.chat.completions.create(model="m", messages=USER)
        async with client_of(llm, max_retries=1) as client:
            completion = await client.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == "kept"
    assert len(llm.requests) == 3


async def test_a_delayed_reply_makes_the_client_time_out() -> None:
    async with ScriptedLLM([Reply.text("too late").delayed(0.5)]) as llm:
        async with AsyncOpenAI(base_url=llm.base_url, api_key="test", max_retries=0, timeout=0.1) as client:
            with pytest.raises(openai.APITimeoutError):
                await client.chat.completions.create(model="m", messages=USER)


async def test_slow_tokens_arrive_over_time() -> None:
    delay = 0.05
    script = [Reply.text("one two three four five").slow(token_delay=delay)]
    async with ScriptedLLM(script) as llm, client_of(llm) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        arrivals = [time.monotonic() async for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    assert len(arrivals) == 5
    # The server waits `delay` before each token after the first. A busy client may read two
    # chunks in one go (a gap near 0), but the tokens cannot all arrive sooner than the waits.
    assert arrivals[-1] - arrivals[0] >= 4 * delay * 0.8, arrivals


class Review(pydantic.BaseModel):
    title: str
    rating: int
    summary: str


async def test_structured_output_content_parses_into_the_requested_type() -> None:
    review = Review(title="Inception", rating=9, summary="Layered and loud.")
    async with ScriptedLLM([Reply.structured(review)]) as llm, client_of(llm) as client:
        completion = await client.chat.completions.parse(model="m", messages=USER, response_format=Review)
    assert completion.choices[0].message.parsed == review
    response_format = llm.requests[0].response_format
    assert response_format is not None and response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True


async def test_every_request_is_recorded_with_its_body_and_headers_but_not_the_api_key() -> None:
    tools = [strict_tool("lookup", {"booking": {"type": "string"}})]
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my bag?"}]
    async with ScriptedLLM([Reply.text("a"), Reply.text("b")]) as llm, client_of(llm) as client:
        await client.chat.completions.create(model="m", messages=messages, tools=tools)
        await client.chat.completions.create(model="m", messages=USER, stream=True, stream_options={"include_usage": True})
    first, second = llm.requests
    assert (first.number, second.number) == (1, 2)
    assert first.messages == messages and first.tools == tools and first.stream is False
    assert first.last_user_message == "Where is my bag?"
    assert second.stream is True and second.body["stream_options"] == {"include_usage": True}
    assert first.headers["content-type"] == "application/json"
    assert first.headers["authorization"] == "<redacted>"
    assert "sk-test-secret" not in repr(llm.requests)


async def test_a_script_that_runs_out_answers_500_naming_the_request() -> None:
    async with ScriptedLLM([Reply.text("only one")]) as llm, client_of(llm, max_retries=2) as client:
        await client.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="m", messages=USER)
    assert "scripted LLM: no reply left for request #2" in caught.value.message
    assert len(llm.requests) == 2  # the client is told not to retry, so the number it sees is the one that ran out


async def test_a_responder_answers_once_the_script_is_used_up() -> None:
    def echo(request: dict[str, Any]) -> Reply:
        return Reply.text("You said: " + request["messages"][-1]["content"])

    async with ScriptedLLM([Reply.text("scripted first")], responder=echo) as llm, client_of(llm) as client:
        answers = []
        for said in ("ping", "pong", "again"):
            completion = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": said}])
            answers.append(completion.choices[0].message.content)
        llm.add(Reply.text("added later"))
        completion = await client.chat.completions.create(model="m", messages=USER)
        answers.append(completion.choices[0].message.content)
    assert answers == ["scripted first", "You said: pong", "You said: again", "added later"]


async def test_a_responder_that_raises_answers_500_with_its_error() -> None:
    def broken(request: dict[str, Any]) -> Reply:
        raise KeyError("tools")

    async with ScriptedLLM(responder=broken) as llm, client_of(llm) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="m", messages=USER)
    assert "scripted LLM: the responder failed on request #1: KeyError: 'tools'" in caught.value.message


async def test_a_malformed_request_is_refused_with_400_and_uses_no_reply() -> None:
    async with ScriptedLLM([Reply.text("kept")]) as llm:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{llm.base_url}/chat/completions", json={"model": "m"}) as response:
                assert response.status == 400
                body = await response.json()
    assert body["error"]["type"] == "invalid_request_error" and "messages" in body["error"]["message"]
    assert llm.remaining == 1 and len(llm.requests) == 1


def test_the_server_runs_in_a_thread_for_synchronous_code() -> None:
    with ScriptedLLM([Reply.text("from a thread")], model="tiny") as llm:
        client = openai.OpenAI(base_url=llm.base_url, api_key="test", max_retries=0)
        models = client.models.list()
        completion = client.chat.completions.create(model="tiny", messages=USER)
        client.close()
        assert llm.base_url.startswith("http://127.0.0.1:") and llm.base_url.endswith("/v1")
    assert [m.id for m in models.data] == ["tiny"]
    assert completion.choices[0].message.content == "from a thread"
    with pytest.raises(openai.APIConnectionError):
        openai.OpenAI(base_url=llm.base_url, api_key="test", max_retries=0).models.list()


def test_replies_are_checked_when_they_are_written() -> None:
    with pytest.raises(ValueError, match="status"):
        Reply.http_error(200, "fine")
    with pytest.raises(ValueError, match="cut"):
        Reply.text("x").cut(after_chunks=-1)
    with pytest.raises(ValueError, match="token_delay"):
        Reply.text("x").slow(token_delay=-0.1)
    assert Reply.text("x").with_usage(prompt=3, completion=1).usage == Usage(prompt_tokens=3, completion_tokens=1)
