"""The bundled LLM examples end to end: broker, processor, worker, the real openai client, a scripted model.

One processor and one worker load every example (`--app examples.llm_agents`); the
worker's model is `agentstream.agents.examples.scripted` served by a `ScriptedLLM`, with
fixed token counts so usage can be checked exactly, and the researchers' answers
delayed so the coordinator's children can be seen while they run. Everything goes
through `AgentClient` (and the HTTP API for one approval), as a user's code would.
`agentstream demo --llm` runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from agentstream.agents import AgentClient, AgentNotFoundError
from agentstream.agents.examples import research, reviewer
from agentstream.agents.examples.scripted import Conversation, responder
from agentstream.agents.testing import Reply, ScriptedLLM
from agentstream.streams.devstack import ManagedProcess, component
from agentstream.streams.kafka import ensure_topics
from agentstream.streams.settings import Settings
from agentstream.topics import StepCommand, StreamEvent, TopicNames

from support import PARTITIONS

pytestmark = pytest.mark.integration

APP = "examples.llm_agents"
TASK_QUEUE = "restack"
COORDINATOR_USAGE = (100, 10)  # prompt, completion tokens of each of the coordinator's model calls
RESEARCHER_USAGE = (40, 4)
RESEARCHER_DELAY_S = 2.0  # the researchers think a while, so their runs can be seen in flight


@dataclass
class Stack:
    bootstrap: str
    names: TopicNames
    api_url: str
    llm: ScriptedLLM
    client: AgentClient


def the_examples_model(body: dict[str, Any]) -> Reply:
    """The examples' scripted model, with fixed usage for the research agents and slow researchers."""
    reply = responder()(body)
    system = Conversation(body).system
    if system == research.RESEARCHER_INSTRUCTIONS:
        return reply.with_usage(*RESEARCHER_USAGE).delayed(RESEARCHER_DELAY_S)
    if system == research.COORDINATOR_INSTRUCTIONS:
        return reply.with_usage(*COORDINATOR_USAGE)
    return reply


@pytest.fixture(scope="module")
def scripted_model() -> Iterator[ScriptedLLM]:
    with ScriptedLLM(responder=the_examples_model) as llm:  # its own thread: the tests' loop may block
        yield llm


@pytest.fixture(scope="module")
async def stack(broker: str, scripted_model: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("llm-examples")
    suffix = uuid.uuid4().hex[:10]
    prefix = f"t{suffix}."
    names = TopicNames(prefix)
    await ensure_topics(broker, names.specs(PARTITIONS, task_queues=(TASK_QUEUE,)))
    env = {"AGENTSTREAM_TOPIC_PREFIX": prefix, "AGENTSTREAM_APP_ID": f"app-{suffix}", "AGENTSTREAM_LOG_LEVEL": "INFO"}
    processes: list[ManagedProcess] = [
        component("processor", broker, APP, log_dir=tmp,
                  env={**env, "AGENTSTREAM_DATA_DIR": str(tmp / "state")}),
        component("worker", broker, APP, log_dir=tmp,
                  env={**env, "AGENTSTREAM_LLM_BASE_URL": scripted_model.base_url, "OPENAI_API_KEY": ""}),
    ]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready()
        api_url = processes[0].url
        settings = Settings(kafka_bootstrap=broker, topic_prefix=prefix, api_url=api_url)
        async with AgentClient(settings) as client:
            yield Stack(broker, names, api_url, scripted_model, client)
    finally:
        for process in processes:
            process.kill()


# -- helpers ---------------------------------------------------------------------------------------


async def ask(client: AgentClient, agent_id: str, text: str, timeout: float = 60) -> dict[str, Any]:
    """Send one user message and return its RunResult (the `message` event's result)."""
    message_id = await client.send_agent_event(agent_id, "message", {"text": text})
    event = await event_done(client, agent_id, message_id, timeout)
    assert event["error"] is None, event["error"]
    result: dict[str, Any] = event["result"]
    return result


async def state_of(client: AgentClient, agent_id: str) -> dict[str, Any]:
    """The agent's state; empty until its processor has applied its schedule."""
    try:
        return await client.get_agent_state(agent_id)
    except AgentNotFoundError:
        return {"events": [], "fields": {}, "children": {}}


async def event_done(client: AgentClient, agent_id: str, message_id: str, timeout: float = 60) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        state = await state_of(client, agent_id)
        return next((e for e in state["events"] if e["message_id"] == message_id and e["done"]), None)

    event: dict[str, Any] = await apoll(check, timeout, f"{agent_id}: event {message_id} handled")
    return event


async def apoll(check: Any, timeout: float, what: str) -> Any:
    """`poll` for async checks."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


async def pending_request(client: AgentClient, agent_id: str, tool: str) -> dict[str, Any]:
    """The approval request the agent waits on, once it is in its state."""
    async def check() -> dict[str, Any] | None:
        state = await state_of(client, agent_id)
        pending = state["fields"].get("pending") or {}
        return next((r for r in pending.values() if r["tool"] == tool), None)

    request: dict[str, Any] = await apoll(check, 60, f"{agent_id} asking to approve {tool}")
    return request


async def stream_of(client: AgentClient, agent_id: str) -> list[StreamEvent]:
    """What is on the agent's stream now."""
    return [item.event async for item in client.stream(agent_id, follow=False)]


def tool_results(events: list[StreamEvent], name: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type == "tool_result" and isinstance(e.data, dict) and e.data["name"] == name]


async def step_functions(bootstrap: str, topic: str, agent_id: str) -> list[str]:
    """The functions of every step command the agent ever issued (the topic read to its end)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        functions: list[str] = []
        while [p for p in partitions if await consumer.position(p) < ends[p]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                commands = (StepCommand.model_validate_json(record.value) for record in records)
                functions.extend(c.function for c in commands if c.agent_id == agent_id)
        return functions
    finally:
        await consumer.stop()


# -- the airline agent -----------------------------------------------------------------------------


async def test_airline_session_asks_for_the_confirmation_number_changes_the_seat_and_sends_an_approved_invoice(
    stack: Stack,
) -> None:
    client, agent_id = stack.client, f"airline-{uuid.uuid4().hex[:8]}"
    await client.schedule_agent("Airline", agent_id)

    first = await ask(client, agent_id, "Hi! Could you move me to seat 10B on my flight?")
    assert "confirmation number" in first["text"] and first["tool_calls"] == 0, first

    second = await ask(client, agent_id, "Sure, it's AB4568.")
    assert second["tool_calls"] == 2 and "10B" in second["text"], second
    events = await stream_of(client, agent_id)
    assert [e.data["name"] for e in events if e.type == "tool_call"] == ["lookup_booking", "change_seat"]  # type: ignore[index]
    [changed] = tool_results(events, "change_seat")
    assert changed["ok"] and '"seat": "10B"' in changed["content"], changed

    message_id = await client.send_agent_event(agent_id, "message", {"text": "Please send the invoice to ada@example.com"})
    request = await pending_request(client, agent_id, "send_invoice")
    assert request["arguments"] == {"confirmation": "AB4568", "email": "ada@example.com"}
    assert tool_results(await stream_of(client, agent_id), "send_invoice") == []  # nothing sent before the approval
    # a chat front end approves over HTTP, as `curl -X POST .../events/approve -d '{"request_id": ...}'` would
    url = f"{stack.api_url}/agents/{quote(agent_id, safe='')}/events/approve"
    async with aiohttp.ClientSession() as http, http.post(url, json={"request_id": request["request_id"]}) as response:
        assert response.status == 202, await response.text()
    third = (await event_done(client, agent_id, message_id))["result"]
    assert "INV-AB4568" in third["text"] and "ada@example.com" in third["text"], third
    [sent] = tool_results(await stream_of(client, agent_id), "send_invoice")
    assert sent["ok"] and f'"key": "{agent_id}/' in sent["content"], sent  # the worker's step context reached it

    events = await stream_of(client, agent_id)
    streamed = "".join(e.data["text"] for e in events if e.type == "text_delta")  # type: ignore[index]
    assert streamed == first["text"] + second["text"] + third["text"]
    state = await client.get_agent_state(agent_id)
    assert state["fields"]["usage"]["calls"] == 1 + 3 + 2 and state["fields"]["pending"] == {}


# -- the reviewer ----------------------------------------------------------------------------------


async def test_reviewer_returns_a_movie_review_that_validates(stack: Stack) -> None:
    agent_id = f"review-{uuid.uuid4().hex[:8]}"
    await stack.client.schedule_agent("MovieReviewer", agent_id, input="Review the movie Inception")
    result = await stack.client.get_agent_result(agent_id, timeout=60)
    review = reviewer.MovieReview.model_validate(result["output"])
    assert review.title == "Inception" and 1 <= review.rating <= 10 and review.summary
    assert reviewer.REVIEWER.parse(result["output"]) == review
    [request] = [r for r in stack.llm.requests if Conversation(r.body).system == reviewer.INSTRUCTIONS
                 and r.last_user_message == "Review the movie Inception"]
    assert request.response_format is not None
    schema = request.response_format["json_schema"]
    assert schema["strict"] is True and set(schema["schema"]["required"]) == {"title", "rating", "summary"}


# -- the deploy agent ------------------------------------------------------------------------------


async def test_deployer_runs_the_tests_waits_for_approval_then_deploys(stack: Stack) -> None:
    client, agent_id = stack.client, f"deploy-{uuid.uuid4().hex[:8]}"
    await client.schedule_agent("Deployer", agent_id, input="Deploy version 2.0 of checkout to production")
    request = await pending_request(client, agent_id, "deploy")
    assert request["arguments"] == {"service": "checkout", "version": "2.0"}
    events = await stream_of(client, agent_id)
    assert [r["ok"] for r in tool_results(events, "run_tests")] == [True] and tool_results(events, "deploy") == []
    assert (await client.get_agent_state(agent_id))["status"] == "running"

    await client.send_agent_event(agent_id, "approve", {"request_id": request["request_id"]})
    result = await client.get_agent_result(agent_id, timeout=60)
    assert result["text"].startswith("Deployed checkout 2.0 to production (dep-"), result
    [deployed] = tool_results(await stream_of(client, agent_id), "deploy")
    assert deployed["ok"] and '"environment": "production"' in deployed["content"]
    functions = await step_functions(stack.bootstrap, stack.names.step_commands(TASK_QUEUE), agent_id)
    assert "tool.run_tests" in functions and "tool.deploy" in functions, functions


async def test_deployer_deploys_nothing_when_the_deployment_is_rejected(stack: Stack) -> None:
    client, agent_id = stack.client, f"deploy-{uuid.uuid4().hex[:8]}"
    await client.schedule_agent("Deployer", agent_id, input="Deploy version 2.1 of billing to production")
    request = await pending_request(client, agent_id, "deploy")

    await client.send_agent_event(agent_id, "reject", {"request_id": request["request_id"], "reason": "change freeze"})
    result = await client.get_agent_result(agent_id, timeout=60)
    assert result["text"].startswith("I did not deploy billing 2.1") and "change freeze" in result["text"], result
    [refused] = tool_results(await stream_of(client, agent_id), "deploy")
    assert not refused["ok"] and "rejected" in refused["content"]
    functions = await step_functions(stack.bootstrap, stack.names.step_commands(TASK_QUEUE), agent_id)
    assert "tool.run_tests" in functions and "tool.deploy" not in functions, functions


# -- the research coordinator ----------------------------------------------------------------------


async def test_research_coordinator_runs_researchers_as_parallel_children_and_counts_their_usage(stack: Stack) -> None:
    client, agent_id = stack.client, f"research-{uuid.uuid4().hex[:8]}"
    question = "Should a small team run Kafka itself?"
    await client.schedule_agent("ResearchCoordinator", agent_id, input=question)

    async def two_children_running() -> dict[str, Any] | None:
        children = (await state_of(client, agent_id))["children"]
        return children if len(children) == 2 else None

    children = await apoll(two_children_running, 30, f"{agent_id} with two children in flight at once")
    assert {child["agent_type"] for child in children.values()} == {"Researcher"}

    result = await client.get_agent_result(agent_id, timeout=60)
    answers = []
    for child_id in children:
        child = await client.get_agent_state(child_id)
        assert child["agent_type"] == "Researcher" and child["status"] == "completed", child
        assert child["parent"]["agent_id"] == agent_id
        assert child["result"]["usage"]["prompt_tokens"] == RESEARCHER_USAGE[0]
        answers.append(child["result"]["text"])
    assert sorted(child["input"] for child in [await client.get_agent_state(c) for c in children]) == sorted(
        f"What speaks {side} this: {question}" for side in ("for", "against"))
    assert all(answer in result["text"] for answer in answers), result["text"]
    # two calls of its own, one per child
    assert result["usage"]["calls"] == 4 and result["tool_calls"] == 2
    assert result["usage"]["prompt_tokens"] == 2 * COORDINATOR_USAGE[0] + 2 * RESEARCHER_USAGE[0]
    assert result["usage"]["completion_tokens"] == 2 * COORDINATOR_USAGE[1] + 2 * RESEARCHER_USAGE[1]


# -- agentstream demo --llm ------------------------------------------------------------------------


def test_demo_llm_holds_the_airline_conversation_and_prints_the_streamed_answers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_") and k != "OPENAI_API_KEY"}
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "agentstream.streams.cli", "demo", "--llm"], cwd=tmp_path, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the demo stops its broker, processor and worker on SIGTERM
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"`agentstream demo --llm` hung:\n{stdout}\n{stderr}")
    output = stdout + stderr
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    lines = stdout.splitlines()
    expected = [
        "you: Hi! Could you move me to seat 10B on my flight?",
        "Airline: I'd be glad to help. What is your booking's confirmation number?",
        "you: Sure, it's AB4568.",
        '  -> lookup_booking {"confirmation": "AB4568"}',
        '  -> change_seat {"confirmation": "AB4568", "seat": "10B"}',
        "Airline: Done! Your seat on flight AS123 is now 10B. Anything else I can do for you?",
    ]
    assert lines[: len(expected)] == expected, stdout
    assert "scripted model" in stderr and "session closed: 4 model calls" in stderr, stderr
