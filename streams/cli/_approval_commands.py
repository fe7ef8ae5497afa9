"""CLI commands for human approval of an LLM agent's tool calls: approve, reject.

An LLM agent that wants to run a tool marked `needs_approval` publishes an approval
request (its ID is in the agent's state under `pending`, on agent-updates and on the
stream) and waits for an `approve` or `reject` event naming it. These commands send that
event, like `agentstream send`, and then, unless `--no-wait`, wait for the agent to
apply it: only the agent knows whether the request was still waiting (a decision for a
request already decided or timed out is refused, and the refusal is recorded with the
event), so the command reports the agent's answer, not just that a message was sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import click

from agentstream.agents import AgentClient
from agentstream.agents._client import ENDED
from agentstream.agents.exceptions import AgentNotFoundError

from . import cli, run_async, settings

DEFAULT_WAIT_S = 30.0

reason_option = click.option("--reason", help="Why; recorded with the decision and told to the model on a rejection.")
wait_option = click.option(
    "--wait/--no-wait", default=True, show_default=True,
    help="Wait until the agent has applied the decision and report its answer.",
)
timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0), default=DEFAULT_WAIT_S, show_default=True,
    help="Seconds to wait for the agent to apply the decision.",
)


@cli.command()
@click.argument("agent_id")
@click.argument("request_id")
@reason_option
@wait_option
@timeout_option
def approve(agent_id: str, request_id: str, reason: str | None, wait: bool, timeout: float) -> None:
    """Approve the approval request REQUEST_ID of the LLM agent AGENT_ID (the tool call runs)."""
    decide("approve", agent_id, request_id, reason, wait, timeout)


@cli.command()
@click.argument("agent_id")
@click.argument("request_id")
@reason_option
@wait_option
@timeout_option
def reject(agent_id: str, request_id: str, reason: str | None, wait: bool, timeout: float) -> None:
    """Reject the approval request REQUEST_ID of the LLM agent AGENT_ID (the model is told why)."""
    decide("reject", agent_id, request_id, reason, wait, timeout)


def decide(event: str, agent_id: str, request_id: str, reason: str | None, wait: bool, timeout: float) -> None:
    """Send the decision, print its message ID, then (with `wait`) the agent's answer; exit 1 if it refused."""
    conf = settings()

    async def deliver() -> dict[str, Any] | None:
        async with AgentClient(conf) as client:
            message_id = await client.send_agent_event(
                agent_id, event, {"request_id": request_id, "reason": reason}
            )
            click.echo(json.dumps({"agent_id": agent_id, "event": event, "request_id": request_id,
                                   "message_id": message_id}))
            if not wait:
                return None
            return await applied(client, agent_id, message_id, timeout)

    received = run_async(deliver())
    if received is None:
        return
    if received.get("error"):
        raise click.ClickException(
            f"agent {agent_id!r} refused to {event} request {request_id!r}: {received['error']}"
        )
    outcome = received.get("result") or ("approved" if event == "approve" else "rejected")
    click.echo(json.dumps({"agent_id": agent_id, "request_id": request_id, "outcome": outcome}))


async def applied(client: AgentClient, agent_id: str, message_id: str, timeout: float) -> dict[str, Any]:
    """The agent's record of event `message_id` once its handler is done; a ClickException if it never is.

    An agent that has ended takes no more inputs (the processor dead-letters them), so
    finding it ended without the event is an answer too, and waiting longer is pointless.
    """
    deadline = time.monotonic() + timeout
    pause = 0.05
    state: dict[str, Any] | None = None
    while True:
        try:
            state = await client.get_agent_state(agent_id)
        except AgentNotFoundError:
            state = None  # not processed yet, or no such agent: the deadline tells
        if state is not None:
            for received in state.get("events") or []:
                if isinstance(received, dict) and received.get("message_id") == message_id and received.get("done"):
                    return received
            if state.get("status") in ENDED:
                raise click.ClickException(
                    f"agent {agent_id!r} is {state['status']}; it takes no more decisions (the event was not applied)"
                )
        if time.monotonic() + pause > deadline:
            if state is None:
                raise click.ClickException(
                    f"no agent {agent_id!r} within {timeout}s: it was never scheduled, or the processor is behind"
                )
            raise click.ClickException(
                f"agent {agent_id!r} did not apply the decision (message {message_id}) within {timeout}s; "
                f"see `agentstream state {agent_id}`"
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.25)
