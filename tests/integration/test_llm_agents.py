"""LLM agents end to end (issue 8): real processor and worker processes on the broker, the real
`openai` client in the worker talking over HTTP to a `ScriptedLLM` in this test process.

Only public surfaces are used: `AgentClient`, the processor's HTTP API (state, schedule,
events, the SSE stream) and the `agentstream processor` / `worker` subprocesses. What the
model was sent is read from `ScriptedLLM.requests`; what tools did, from the JSON lines
the tools of tests/apps/llmapp.py append to the file named by `LLMAPP_LOG`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from agentstream.agents import AgentClient
from agentstream.agents.testing import Reply, ScriptedLLM, ToolCall
from agentstream.streams.devstack import ManagedProcess
from agentstream.streams.settings import Settings
from agentstream.topics import AgentUpdate

from support import Cluster, get_json, poll

pytestmark = pytest.mark.integration

APP = "llmapp"
LOG_ENV = "LLMAPP_LOG"  # tests/apps/llmapp.py: where its tools write their evidence
RUN_S = 60.0  # a run: a model call or two, a tool or two, through two processes and the broker


@dataclass
class Stack:
    """One processor and one worker on the test's cluster, the worker's model being `llm`."""

    cluster: Cluster
    llm: ScriptedLLM
    log: Path
    data_dir: Path
    processor: ManagedProcess
    worker: ManagedProcess

    def client(self) -> AgentClient:
        return AgentClient(Settings(kafka_bootstrap=self.cluster.bootstrap, topic_prefix=self.cluster.prefix,
                                    api_url=self.processor.url))

    def agent_url(self, agent_id: str, tail: str = "") -> str:
        return f"{self.processor.url}/agents/{quote(agent_id, safe='')}{tail}"

    def state(self, agent_id: str) -> dict[str, Any] | None:
        status, body = get_json(self.agent_url(agent_id), timeout=2)
        return body if status == 200 else None

    def log_lines(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    async def restart_processor(self, name: str) -> None:
        """SIGKILL the processor and start another on the same data dir; returns once it is ready."""
        self.processor.kill()
        self.processor = self.cluster.processor(name, app=APP, data_dir=self.data_dir).start()
        await asyncio.to_thread(self.processor.wait_ready, 90.0)


@pytest.fixture
async def stack(cluster: Cluster, llm: ScriptedLLM) -> Stack:
    log = cluster.tmp / "tools.jsonl"
    data_dir = cluster.tmp / "processor-state"
    processor = cluster.processor(app=APP, data_dir=data_dir).start()
    worker = cluster.worker(app=APP, env={"AGENTSTREAM_LLM_BASE_URL": llm.base_url, LOG_ENV: str(log)}).start()
    await asyncio.gather(asyncio.to_thread(processor.wait_ready), asyncio.to_thread(worker.wait_ready))
    return Stack(cluster, llm, log, data_dir, processor, worker)


def events_named(state: dict[str, Any] | None, name: str) -> list[dict[str, Any]]:
    return [event for event in (state or {}).get("events", []) if event["name"] == name]


async def all_done(stack: Stack, agent_id: str, name: str, count: int) -> list[dict[str, Any]]:
    """The agent's `name` events once `count` of them are done (applied and answered)."""

    def check() -> list[dict[str, Any]] | None:
        events = events_named(stack.state(agent_id), name)
        return events if len(events) == count and all(event["done"] for event in events) else None

    result: list[dict[str, Any]] = await poll(check, timeout=RUN_S, what=f"{count} {name} events of {agent_id} done")
    return result


async def first_notice(client: AgentClient, agent_id: str, kind: str) -> AgentUpdate:
    """The first agent update of `agent_id` carrying a notice of type `kind`."""

    async def find() -> AgentUpdate:
        # an async generator, typed as an iterator: closing it stops its consumer at once
        updates_of = cast(AsyncGenerator[AgentUpdate, None], client.agent_updates(agent_id))
        async with contextlib.aclosing(updates_of) as updates:
            async for update in updates:
                if update.notice is not None and update.notice.get("type") == kind:
                    return update
        raise AssertionError("agent_updates ended")

    return await asyncio.wait_for(find(), RUN_S)


# --- sessions ---------------------------------------------------------------------------------------------


async def test_a_session_sends_the_earlier_exchange_with_the_next_message_and_keeps_each_run_text_as_its_result(
    stack: Stack,
) -> None:
    stack.llm.add(Reply.text("Hello Ada."), Reply.text("Your name is Ada."))
    async with stack.client() as client:
        await client.schedule_agent("LLMApp.Chat", "chat-1")
        await client.send_agent_event("chat-1", "message", {"text": "I am Ada."})
        await client.send_agent_event("chat-1", "message", {"text": "What is my name?"})
    messages = await all_done(stack, "chat-1", "message", 2)

    first, second = stack.llm.requests
    system = {"role": "system", "content": "You are brief."}
    assert first.messages == [system, {"role": "user", "content": "I am Ada."}]
    assert second.messages == [
        system,
        {"role": "user", "content": "I am Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    assert [event["error"] for event in messages] == [None, None]
    assert [event["result"]["text"] for event in messages] == ["Hello Ada.", "Your name is Ada."]
    assert [(event["result"]["stop_reason"], event["result"]["turns"]) for event in messages] == [("done", 1)] * 2
    state = stack.state("chat-1")
    assert state is not None and state["fields"]["history"] == second.messages[1:] + [
        {"role": "assistant", "content": "Your name is Ada."}
    ]


# --- HTTP only: schedule, message, Server-Sent Events ------------------------------------------------------


async def read_frames(
    response: aiohttp.ClientResponse, until: str | None, timeout: float = RUN_S
) -> list[dict[str, str]]:
    """SSE frames until one of event type `until` (inclusive), or until the response ends when None."""

    async def collect() -> list[dict[str, str]]:
        frames: list[dict[str, str]] = []
        fields: dict[str, str] = {}
        while True:
            line = (await response.content.readline()).decode()
            if not line:
                assert until is None, f"the stream ended after {len(frames)} frames, before {until}"
                return frames
            line = line.rstrip("\n")
            if line == "":
                if fields:
                    frames.append(fields)
                    if fields.get("event") == until:
                        return frames
                fields = {}
            elif not line.startswith(":"):  # a comment (heartbeat)
                name, _, value = line.partition(": ")
                fields[name] = value

    return await asyncio.wait_for(collect(), timeout)


async def post(http: aiohttp.ClientSession, url: str, body: Any, key: str) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    async with http.post(URL(url, encoded=True), data=json.dumps(body).encode(), headers=headers) as response:
        return response.status, await response.json()


async def test_over_http_alone_a_message_streams_its_reply_as_sse_and_a_reconnect_resumes_after_last_event_id(
    stack: Stack,
) -> None:
    reply = "Once upon a time, a stream of tokens crossed a broker and arrived whole."
    stack.llm.add(Reply.text(reply))
    agent_id = "web chat/1"  # needs quoting in a URL
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=RUN_S)) as http:
        status, body = await post(http, stack.agent_url(agent_id), {"agent_type": "LLMApp.Chat"}, key="open-1")
        assert status == 202 and body["agent_id"] == agent_id, body
        await poll(lambda: (stack.state(agent_id) or {}).get("status") == "running", timeout=30,
                   what="the session is running")
        status, body = await post(http, stack.agent_url(agent_id, "/events/message"), {"text": "A story?"}, key="m-1")
        assert status == 202 and body["message_id"], body

        stream = URL(stack.agent_url(agent_id, "/stream"), encoded=True)
        async with http.get(stream) as response:
            assert response.status == 200 and response.content_type == "text/event-stream"
            frames = await read_frames(response, until="run_finished")
        events = [json.loads(frame["data"]) for frame in frames]
        assert [frame["event"] for frame in frames] == [event["type"] for event in events]
        deltas = [event["data"]["text"] for event in events if event["type"] == "text_delta"]
        assert len(deltas) > 3 and "".join(deltas) == reply
        assert events[0]["type"] == "run_started" and events[-1]["data"]["text"] == reply

        middle = len(frames) // 2
        assert frames[middle]["event"] == "text_delta"
        async with http.get(stream.update_query(follow="false"), headers={"Last-Event-ID": frames[middle]["id"]}) as response:
            assert response.status == 200
            rest = await read_frames(response, until=None)
        assert [frame["id"] for frame in rest] == [frame["id"] for frame in frames[middle + 1:]]
        assert [frame["data"] for frame in rest] == [frame["data"] for frame in frames[middle + 1:]]
    assert len(stack.llm.requests) == 1


# --- tools --------------------------------------------------------------------------------------------------


async def test_parallel_tool_calls_run_concurrently_and_the_model_gets_each_result_under_its_call_id(
    stack: Stack,
) -> None:
    stack.llm.add(
        Reply.tools(ToolCall("probe", {"label": "a"}, id="call_a"), ToolCall("probe", {"label": "b"}, id="call_b")),
        Reply.text("Both probed."),
    )
    async with stack.client() as client:
        await client.schedule_agent("LLMApp.Prober", "prober-1", input="Probe a and b.")
        result = await client.get_agent_result("prober-1", timeout=RUN_S)
    assert (result["text"], result["tool_calls"], result["turns"]) == ("Both probed.", 2, 2)

    lines = [line for line in stack.log_lines() if line["tool"] == "probe"]
    assert not [line for line in lines if line["event"] == "gave_up"], lines
    spans = {label: (start["t"], end["t"]) for label in ("a", "b")
             for start in lines if start["label"] == label and start["event"] == "start"
             for end in lines if end["label"] == label and end["event"] == "end"}
    assert sorted(spans) == ["a", "b"] and len(lines) == 4, lines
    (start_a, end_a), (start_b, end_b) = spans["a"], spans["b"]
    assert start_a < end_b and start_b < end_a, f"the calls did not overlap: {spans}"

    asked, told = stack.llm.requests
    assert [call["id"] for call in told.messages[-3]["tool_calls"]] == ["call_a", "call_b"]
    assert told.messages[-2:] == [
        {"role": "tool", "tool_call_id": "call_a", "content": '"probed a"'},
        {"role": "tool", "tool_call_id": "call_b", "content": '"probed b"'},
    ]
    assert asked.tools is not None and [tool["function"]["name"] for tool in asked.tools] == ["probe"]


# --- structured output, budget, rate limits -------------------------------------------------------------


async def test_structured_output_recovers_from_one_invalid_answer_with_exactly_two_requests(stack: Stack) -> None:
    valid = {"title": "Dune", "rating": 5, "summary": "Sand, spice and politics."}
    stack.llm.add(Reply.text("not json"), Reply.structured(valid))
    async with stack.client() as client:
        await client.schedule_agent("LLMApp.Reviewer", "reviewer-1", input="Review Dune.")
        result = await client.get_agent_result("reviewer-1", timeout=RUN_S)
    assert result["output"] == valid and result["stop_reason"] == "done"
    first, second = stack.llm.requests
    assert first.response_format is not None and first.response_format["json_schema"]["strict"] is True
    assert second.messages[-2] == {"role": "assistant", "content": "not json"}
    assert "not valid JSON for the schema Review" in second.messages[-1]["content"]


async def test_a_budget_stops_the_run_with_stop_reason_budget_and_no_further_model_request(stack: Stack) -> None:
    stack.llm.add(Reply.tools(ToolCall("lookup", {"city": "Oslo"}, id="call_w")).with_usage(90, 30))
    async with stack.client() as client:
        await client.schedule_agent("LLMApp.Budgeted", "budgeted-1", input="Weather in Oslo?")
        result = await client.get_agent_result("budgeted-1", timeout=RUN_S)
    assert result["stop_reason"] == "budget" and result["text"] == ""
    assert result["usage"]["prompt_tokens"] == 90 and result["usage"]["completion_tokens"] == 30
    assert result["tool_calls"] == 1 and result["turns"] == 1
    assert len(stack.llm.requests) == 1  # the agent completed: no call is in flight, none will come


async def test_a_429_is_retried_and_the_run_finishes_after_two_requests(stack: Stack) -> None:
    stack.llm.add(Reply.rate_limited(retry_after=0.2), Reply.text("Fine now."))
    async with stack.client() as client:
        await client.schedule_agent("LLMApp.Chat", "limited-1", input="Hello?")
        result = await client.get_agent_result("limited-1", timeout=RUN_S)
    assert result["text"] == "Fine now." and result["stop_reason"] == "done"
    assert len(stack.llm.requests) == 2
    assert stack.llm.requests[0].messages == stack.llm.requests[1].messages


# --- approvals ------------------------------------------------------------------------------------------------


async def test_an_approval_after_a_processor_sigkill_runs_the_tool_once_and_refuses_a_duplicate_and_a_reject(
    stack: Stack,
) -> None:
    stack.llm.add(
        Reply.tools(ToolCall("send_invoice", {"confirmation": "ABC123", "amount": 120}, id="call_inv")),
        Reply.text("Invoice sent."),
    )
    agent_id = "clerk-1"
    async with stack.client() as client:
        await client.schedule_agent("LLMApp.Clerk", agent_id)
        await client.send_agent_event(agent_id, "message", {"text": "Send me the invoice for ABC123."})
        pending = await poll(lambda: ((stack.state(agent_id) or {}).get("fields") or {}).get("pending"),
                             timeout=RUN_S, what="an approval request pending")
        [(rid, request)] = pending.items()
        assert (request["tool"], request["arguments"], request["tool_call_id"]) == (
            "send_invoice", {"confirmation": "ABC123", "amount": 120.0}, "call_inv")
        update = await first_notice(client, agent_id, "approval_requested")
        assert update.kind == "agent_update" and update.status.value == "running"
        assert isinstance(update.notice, dict) and isinstance(update.notice["data"], dict)
        assert update.notice["data"]["request_id"] == rid

    await stack.restart_processor("processor-2")
    await poll(lambda: list(((stack.state(agent_id) or {}).get("fields") or {}).get("pending") or {}) == [rid],
               timeout=30, what="the approval request pending on the restarted processor")
    assert stack.log_lines() == [], "the tool ran before it was approved"

    async with stack.client() as client:  # the new processor's API
        await client.send_agent_event(agent_id, "approve", {"request_id": rid})
        [message] = await all_done(stack, agent_id, "message", 1)
        assert message["result"]["text"] == "Invoice sent.", message
        await client.send_agent_event(agent_id, "approve", {"request_id": rid})
        await client.send_agent_event(agent_id, "reject", {"request_id": rid, "reason": "too late"})
        approvals = await all_done(stack, agent_id, "approve", 2)
        [rejection] = await all_done(stack, agent_id, "reject", 1)

    assert (approvals[0]["result"], approvals[0]["error"]) == ("approved", None)
    for refused in (approvals[1], rejection):
        assert refused["error"] is not None and "already approved" in refused["error"], refused
    invoices = [line for line in stack.log_lines() if line["tool"] == "send_invoice"]
    assert [(line["confirmation"], line["amount"]) for line in invoices] == [("ABC123", 120.0)]
    told = stack.llm.requests[-1].messages[-1]
    assert told == {"role": "tool", "tool_call_id": "call_inv", "content": '"invoice for ABC123 sent"'}
    assert len(stack.llm.requests) == 2


async def test_an_approval_that_times_out_is_told_to_the_model_as_not_approved_and_a_late_decision_is_refused(
    stack: Stack,
) -> None:
    stack.llm.add(Reply.tools(ToolCall("wire_money", {"amount": 50}, id="call_wire")), Reply.text("I could not."))
    agent_id = "clerk-2"
    async with stack.client() as client:
        await client.schedule_agent("LLMApp.Clerk", agent_id)
        await client.send_agent_event(agent_id, "message", {"text": "Wire me 50 euros."})
        notice = (await first_notice(client, agent_id, "approval_requested")).notice
        assert notice is not None and isinstance(notice["data"], dict)
        rid = notice["data"]["request_id"]
        [message] = await all_done(stack, agent_id, "message", 1)
        assert message["result"]["text"] == "I could not.", message
        await client.send_agent_event(agent_id, "approve", {"request_id": rid})
        [late] = await all_done(stack, agent_id, "approve", 1)

    told = stack.llm.requests[-1].messages[-1]
    assert told["role"] == "tool" and told["tool_call_id"] == "call_wire"
    assert "not approved" in told["content"] and "no decision within 1.5s" in told["content"], told
    assert late["error"] is not None and "timed out" in late["error"], late
    assert stack.log_lines() == [], "a timed-out approval ran the tool"


# --- memory and summaries -----------------------------------------------------------------------------------


def tool_answer(name: str, arguments: dict[str, Any], call_id: str) -> Reply:
    return Reply.tools(ToolCall(name, arguments, id=call_id))


async def test_a_fact_remembered_in_one_session_is_recalled_in_another_session_of_the_same_user(
    stack: Stack,
) -> None:
    stack.llm.add(
        tool_answer("remember", {"fact": "Ada is vegetarian"}, "call_r"), Reply.text("Noted."),
        tool_answer("recall", {"query": "vegetarian food"}, "call_q"), Reply.text("A vegetable curry."),
    )
    async with stack.client() as client:
        await client.schedule_agent("LLMApp.Remembering", "mem-chat-1")
        await client.send_agent_event("mem-chat-1", "message", {"text": "I am vegetarian.", "user": "ada"})
        await all_done(stack, "mem-chat-1", "message", 1)
        await poll(lambda: (stack.state("LLMApp.Memory:ada") or {}).get("fields", {}).get("facts"),
                   timeout=RUN_S, what="the fact in Ada's memory agent")
        await client.schedule_agent("LLMApp.Remembering", "mem-chat-2")
        await client.send_agent_event("mem-chat-2", "message", {"text": "What should I cook?", "user": "ada"})
        [answered] = await all_done(stack, "mem-chat-2", "message", 1)
    assert answered["result"]["text"] == "A vegetable curry."
    after_recall = stack.llm.requests[3].messages[-1]
    assert after_recall == {"role": "tool", "tool_call_id": "call_q", "content": '["Ada is vegetarian"]'}
    memory = stack.state("LLMApp.Memory:ada")
    assert memory is not None and [f["text"] for f in memory["fields"]["facts"]] == ["Ada is vegetarian"]


async def test_a_history_cut_by_the_policy_is_folded_into_a_summary_by_a_model_call(stack: Stack) -> None:
    stack.llm.add(Reply.text("Hello Ada."), Reply.text("SUMMARY: Ada likes tea."), Reply.text("Tea it is."))
    async with stack.client() as client:
        await client.schedule_agent("LLMApp.Summarizing", "sum-1")
        await client.send_agent_event("sum-1", "message", {"text": "I am Ada and I like tea."})
        await all_done(stack, "sum-1", "message", 1)
        await client.send_agent_event("sum-1", "message", {"text": "What do I drink?"})
        await all_done(stack, "sum-1", "message", 2)
    first, summary, second = stack.llm.requests
    assert str(summary.messages[0]["content"]).startswith("Summarise")
    assert "I am Ada and I like tea." in str(summary.messages[1]["content"])
    assert not summary.tools  # a summary is a plain model call
    assert second.messages == [
        {"role": "system", "content": "You are brief.\n\nSummary of the earlier conversation:\nSUMMARY: Ada likes tea."},
        {"role": "user", "content": "What do I drink?"},
    ]
    state = stack.state("sum-1")
    assert state is not None and state["fields"]["summary"] == "SUMMARY: Ada likes tea."
    assert len(state["fields"]["history"]) <= 2
