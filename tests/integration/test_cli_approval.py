"""`agentstream approve` / `reject`, run as subprocesses against an LLM agent waiting for a human.

The agent (tests/apps/approvalapp.py) runs on a real processor; its model calls run on
a real worker whose `openai` client talks to a `ScriptedLLM` in this test process. The
model asks for a tool that needs approval; the CLI decides, and reports what the agent
answered: the outcome, or why the agent refused the decision (exit code 1).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from agentstream.agents import AgentClient
from agentstream.agents.testing import Reply, ScriptedLLM, ToolCall
from agentstream.streams.devstack import ManagedProcess
from agentstream.streams.settings import Settings
from support import Cluster, get_json, poll
from test_cli import Result, assert_clean_failure, cli_env, run_cli

pytestmark = pytest.mark.integration

APP = "approvalapp"
LOG_ENV = "APPROVALAPP_LOG"
AGENT_TYPE = "ApprovalApp.Desk"
RUN_S = 60.0


@dataclass
class Stack:
    """One processor and one worker on the test's cluster, the worker's model being `llm`."""

    cluster: Cluster
    llm: ScriptedLLM
    log: Path
    processor: ManagedProcess

    def client(self) -> AgentClient:
        return AgentClient(Settings(kafka_bootstrap=self.cluster.bootstrap, topic_prefix=self.cluster.prefix,
                                    api_url=self.processor.url))

    def state(self, agent_id: str) -> dict[str, Any] | None:
        status, body = get_json(f"{self.processor.url}/agents/{quote(agent_id, safe='')}", timeout=2)
        return body if status == 200 else None

    def refunds(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    async def cli(self, *args: str) -> Result:
        """`agentstream <args>` against this cluster, in a thread (the model server shares this process)."""
        env = cli_env(AGENTSTREAM_KAFKA_BOOTSTRAP=self.cluster.bootstrap, AGENTSTREAM_TOPIC_PREFIX=self.cluster.prefix,
                      AGENTSTREAM_API_URL=self.processor.url)
        return await asyncio.to_thread(run_cli, *args, env=env, timeout=90)

    async def waiting_request(self, agent_id: str, text: str) -> str:
        """Schedule a session, send it `text`, and return the ID of the approval request it then waits on."""
        async with self.client() as client:
            await client.schedule_agent(AGENT_TYPE, agent_id)
            await client.send_agent_event(agent_id, "message", {"text": text})
        pending = await poll(lambda: ((self.state(agent_id) or {}).get("fields") or {}).get("pending"),
                             timeout=RUN_S, what=f"an approval request of {agent_id}")
        [request_id] = pending
        return str(request_id)

    async def answered(self, agent_id: str) -> dict[str, Any]:
        """The agent's `message` event once its run has finished."""

        def done() -> dict[str, Any] | None:
            events = [e for e in (self.state(agent_id) or {}).get("events", []) if e["name"] == "message"]
            return events[0] if events and events[0]["done"] else None

        result: dict[str, Any] = await poll(done, timeout=RUN_S, what=f"the message of {agent_id} answered")
        return result


@pytest.fixture
async def stack(cluster: Cluster, llm: ScriptedLLM) -> Stack:
    log = cluster.tmp / "refunds.jsonl"
    processor = cluster.processor(app=APP).start()
    worker = cluster.worker(app=APP, env={"AGENTSTREAM_LLM_BASE_URL": llm.base_url, LOG_ENV: str(log)}).start()
    await asyncio.gather(asyncio.to_thread(processor.wait_ready), asyncio.to_thread(worker.wait_ready))
    return Stack(cluster, llm, log, processor)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_approve_runs_the_tool_and_a_second_approve_fails_saying_it_was_already_decided(stack: Stack) -> None:
    stack.llm.add(
        Reply.tools(ToolCall("issue_refund", {"confirmation": "ABC123", "amount": 80}, id="call_refund")),
        Reply.text("Refunded."),
    )
    agent_id = "desk-approve"
    request_id = await stack.waiting_request(agent_id, "Refund ABC123, please.")
    assert stack.refunds() == [], "the tool ran before it was approved"

    approved = await stack.cli("approve", agent_id, request_id, "--reason", "checked the booking")

    assert approved.returncode == 0, approved.output
    sent, outcome = json_lines(approved.stdout)
    assert (sent["agent_id"], sent["event"], sent["request_id"]) == (agent_id, "approve", request_id)
    assert outcome == {"agent_id": agent_id, "request_id": request_id, "outcome": "approved"}
    [applied] = [e for e in (stack.state(agent_id) or {})["events"] if e["name"] == "approve"]
    assert applied["message_id"] == sent["message_id"]
    assert applied["payload"] == {"request_id": request_id, "reason": "checked the booking"}
    message = await stack.answered(agent_id)
    assert message["error"] is None and message["result"]["text"] == "Refunded.", message
    assert stack.refunds() == [{"tool": "issue_refund", "confirmation": "ABC123", "amount": 80.0}]

    again = await stack.cli("approve", agent_id, request_id)

    assert_clean_failure(again)
    assert f"refused to approve request {request_id!r}" in again.stderr, again.stderr
    assert "already approved" in again.stderr, again.stderr
    assert len(stack.refunds()) == 1, "a duplicate approval ran the tool again"


async def test_reject_with_a_reason_tells_the_model_why_and_the_tool_does_not_run(stack: Stack) -> None:
    stack.llm.add(
        Reply.tools(ToolCall("issue_refund", {"confirmation": "XYZ789", "amount": 500}, id="call_refund")),
        Reply.text("Sorry, no refund."),
    )
    agent_id = "desk-reject"
    request_id = await stack.waiting_request(agent_id, "Refund XYZ789.")

    rejected = await stack.cli("reject", agent_id, request_id, "--reason", "over the limit")

    assert rejected.returncode == 0, rejected.output
    assert json_lines(rejected.stdout)[-1] == {"agent_id": agent_id, "request_id": request_id, "outcome": "rejected"}
    message = await stack.answered(agent_id)
    assert message["result"]["text"] == "Sorry, no refund.", message
    told = stack.llm.requests[-1].messages[-1]
    assert told == {"role": "tool", "tool_call_id": "call_refund",
                    "content": "Error: a human rejected this call (over the limit)"}
    assert stack.refunds() == []


async def test_no_wait_only_sends_the_decision_and_needs_no_processor(cluster: Cluster) -> None:
    env = cli_env(AGENTSTREAM_KAFKA_BOOTSTRAP=cluster.bootstrap, AGENTSTREAM_TOPIC_PREFIX=cluster.prefix,
                  AGENTSTREAM_API_URL="http://127.0.0.1:9")  # nothing answers there

    result = await asyncio.to_thread(run_cli, "reject", "desk-x", "r1", "--no-wait", env=env, timeout=90)

    assert result.returncode == 0, result.output
    [sent] = json_lines(result.stdout)
    assert (sent["event"], sent["request_id"]) == ("reject", "r1") and sent["message_id"]
    [record] = await cluster.read_topic(cluster.names.agent_events, until=lambda values: len(values) >= 1)
    assert (record["event"], record["payload"]) == ("reject", {"request_id": "r1", "reason": None})
    assert record["message_id"] == sent["message_id"]
