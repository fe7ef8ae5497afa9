"""`agentstream demo --llm`: a conversation with the example airline agent, streamed as it happens.

The model is a real endpoint when `OPENAI_API_KEY` or `AGENTSTREAM_LLM_BASE_URL` is set
(the worker inherits them; `AGENTSTREAM_LLM_MODEL` names the model), and otherwise the
scripted model of the examples (`agentstream.agents.examples.scripted`), served from
this process, so the demo needs no key. The conversation is the one of Restate's
airline example: the customer asks for a seat change, the agent asks for the
confirmation number, the customer gives it, the agent looks the booking up and moves
the seat. Each answer is printed as its tokens arrive on `agent-stream`, tool calls as
one line each.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from agentstream.topics import StreamEvent

from ..devstack import DevStack

if TYPE_CHECKING:  # the CLI does not load the testing helpers (aiohttp server) unless --llm asks for them
    from agentstream.agents.testing import ScriptedLLM

APP = "examples.airline"
AGENT_TYPE = "Airline"
TURNS = ("Hi! Could you move me to seat 10B on my flight?", "Sure, it's AB4568.")
ANSWER_TIMEOUT_S = 180.0  # per message: a real model may retry after rate limits
TOKEN_DELAY_S = 0.03  # how fast the scripted model "types", so the streaming shows


def start_model(progress: Callable[[str], None]) -> ScriptedLLM | None:
    """The scripted model, started and handed to the worker, unless a real endpoint is configured."""
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("AGENTSTREAM_LLM_BASE_URL"):
        where = os.environ.get("AGENTSTREAM_LLM_BASE_URL") or "OpenAI"
        progress(f"model: {os.environ.get('AGENTSTREAM_LLM_MODEL', 'gpt-4o-mini')} at {where}")
        return None
    from agentstream.agents.examples.scripted import scripted_llm

    llm = scripted_llm(token_delay=TOKEN_DELAY_S).start_in_thread()
    os.environ["AGENTSTREAM_LLM_BASE_URL"] = llm.base_url  # the worker started next inherits it
    progress(f"model: the examples' scripted model at {llm.base_url} (set OPENAI_API_KEY for a real one)")
    return llm


class Printer:
    """Prints an agent's stream: answers as their tokens arrive, tool calls one line each."""

    def __init__(self, speaker: str) -> None:
        self.speaker = speaker
        self.in_text = False  # in the middle of a line of answer text

    def show(self, event: StreamEvent) -> None:
        data: Any = event.data
        if event.type == "text_delta" and isinstance(data, dict):
            if not self.in_text:
                click.echo(click.style(f"{self.speaker}: ", fg="green"), nl=False)
                self.in_text = True
            click.echo(str(data.get("text", "")), nl=False)
        elif event.type == "tool_call" and isinstance(data, dict):
            self.end_line()
            click.echo(click.style(f"  -> {data.get('name')} {data.get('arguments')}", fg="yellow"))
        elif event.type == "approval_requested" and isinstance(data, dict):
            self.end_line()
            click.echo(click.style(f"  waiting for approval of {data.get('tool')} (request {data.get('request_id')})",
                                   fg="yellow"))
        elif event.type == "superseded":
            self.end_line()
            click.echo(click.style("  (the model call is retried: the partial answer above is void)", fg="red"))
        elif event.type == "run_finished":
            self.end_line()

    def end_line(self) -> None:
        if self.in_text:
            click.echo()
            self.in_text = False


async def _follow(client: Any, agent_id: str, printer: Printer, finished: asyncio.Queue[dict[str, Any]]) -> None:
    async for item in client.stream(agent_id):
        printer.show(item.event)
        if item.event.type == "run_finished" and isinstance(item.event.data, dict):
            finished.put_nowait(item.event.data)


async def _answered(client: Any, agent_id: str, message_id: str, finished: asyncio.Queue[dict[str, Any]]) -> None:
    """Waits for the run that answers the message; fails with the agent's error if the message failed."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(finished.get(), timeout=1.0)
            return
        except asyncio.TimeoutError:
            state = await client.get_agent_state(agent_id)
            for event in state.get("events", []):
                if event.get("message_id") == message_id and event.get("error"):
                    raise click.ClickException(f"the agent could not answer: {event['error']}")
    raise click.ClickException(f"no answer within {ANSWER_TIMEOUT_S:.0f}s")


async def converse(stack: DevStack, progress: Callable[[str], None]) -> dict[str, Any]:
    """Holds the demo conversation; returns the agent's final state."""
    from agentstream.agents import AgentClient

    async with AgentClient(bootstrap=stack.bootstrap, api_url=stack.processor.url) as client:
        agent_id = f"demo-airline-{uuid.uuid4().hex[:6]}"
        await client.schedule_agent(AGENT_TYPE, agent_id)
        progress(f"scheduled the {AGENT_TYPE} agent as session {agent_id}")
        finished: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        printer = Printer(AGENT_TYPE)
        follower = asyncio.create_task(_follow(client, agent_id, printer, finished))
        try:
            for text in TURNS:
                click.echo(click.style("you: ", fg="cyan") + text)
                message_id = await client.send_agent_event(agent_id, "message", {"text": text})
                await _answered(client, agent_id, message_id, finished)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        await client.send_agent_event(agent_id, "close")
        await client.get_agent_result(agent_id, timeout=60)
        state: dict[str, Any] = await client.get_agent_state(agent_id)
        usage = (state.get("fields") or {}).get("usage") or {}
        progress(f"session closed: {usage.get('calls', 0)} model calls, "
                 f"{usage.get('prompt_tokens', 0)} prompt and {usage.get('completion_tokens', 0)} completion tokens")
        return state

