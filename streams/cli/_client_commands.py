"""CLI commands that act as a client: schedule, send, cancel, state."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import click

from agentstream.agents import AgentClient
from agentstream.agents._registry import agent_definitions

from ..security import bearer_headers
from . import app_dir_option, app_option, cli, parse_json, run_async, settings
from ._loading import load_app


def known_agent_types(
    api_url: str, app: str | None, app_dir: str | None, headers: dict[str, str] | None = None
) -> dict[str, list[str]] | None:
    """Agent types and their events, from --app if given, else from the processor's API; None if unknown."""
    if app:
        load_app(app, app_dir)
        return {name: sorted(d.events) for name, d in agent_definitions().items()}
    request = urllib.request.Request(f"{api_url.rstrip('/')}/agent-types", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return {name: info["events"] for name, info in json.loads(response.read()).items()}
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None  # the processor will dead-letter what it does not know


def check_agent_type(agent_type: str, known: dict[str, list[str]] | None) -> None:
    if known is not None and agent_type not in known:
        listing = ", ".join(sorted(known)) or "none"
        raise click.ClickException(
            f"unknown agent type {agent_type!r}; the processor knows: {listing}. "
            "Check the name (it is the class name unless @agent.defn(name=...) says otherwise) "
            "and that the processor runs with the --app that defines it."
        )


@cli.command()
@click.argument("agent_type")
@click.option("--id", "agent_id", help="Agent ID (default: a new unique one).")
@click.option("--input", "input_json", metavar="JSON", help="Input for the agent's run method.")
@click.option("--idempotency-key", help="Drop repeated schedules with the same key.")
@app_option
@app_dir_option
def schedule(agent_type: str, agent_id: str | None, input_json: str | None, idempotency_key: str | None,
             app: str | None, app_dir: str | None) -> None:
    """Schedule an agent of AGENT_TYPE; prints its agent ID and run ID."""
    conf = settings()
    payload = parse_json(input_json, "--input")
    check_agent_type(agent_type, known_agent_types(conf.api_url, app, app_dir, bearer_headers(conf)))
    agent_id = agent_id or f"{agent_type}-{__import__('uuid').uuid4().hex[:12]}"

    async def send() -> str:
        async with AgentClient(conf) as client:
            return await client.schedule_agent(agent_type, agent_id, payload, idempotency_key=idempotency_key)

    run_id = run_async(send())
    click.echo(json.dumps({"agent_id": agent_id, "run_id": run_id}))


@cli.command()
@click.argument("agent_id")
@click.argument("event")
@click.argument("payload", required=False, metavar="[JSON]")
@click.option("--idempotency-key", help="Drop repeated events with the same key.")
def send(agent_id: str, event: str, payload: str | None, idempotency_key: str | None) -> None:
    """Send EVENT with an optional JSON payload to the agent AGENT_ID."""
    conf = settings()
    value = parse_json(payload, "the event payload")

    async def deliver() -> str:
        async with AgentClient(conf) as client:
            return await client.send_agent_event(agent_id, event, value, idempotency_key=idempotency_key)

    click.echo(json.dumps({"agent_id": agent_id, "event": event, "message_id": run_async(deliver())}))


@cli.command()
@click.argument("agent_id")
@click.option("--reason", help="Why, recorded on the agent.")
def cancel(agent_id: str, reason: str | None) -> None:
    """Cancel the agent AGENT_ID."""
    conf = settings()

    async def deliver() -> str:
        async with AgentClient(conf) as client:
            return await client.cancel_agent(agent_id, reason)

    click.echo(json.dumps({"agent_id": agent_id, "message_id": run_async(deliver())}))


@cli.command()
@click.argument("agent_id")
def state(agent_id: str) -> None:
    """Print the state of the agent AGENT_ID as JSON (asks AGENTSTREAM_API_URL)."""
    conf = settings()

    async def fetch() -> dict[str, Any]:
        async with AgentClient(conf) as client:
            return await client.get_agent_state(agent_id)

    click.echo(json.dumps(run_async(fetch()), indent=2))
