"""CLI commands that act as a client: schedule, send, cancel, state, list, dead-letters.

`schedule`, `send` and `cancel` wait for the input's outcome by default (`--no-wait` does
not): the processor applies an input some time after the broker took it, and may reject it
then (an unknown event, a payload its handler refuses, an agent that already runs). The
command prints the outcome with the IDs and exits 1 when the input was dead-lettered (the
reason on stderr), 3 when no processor reported an outcome in time.
"""

from __future__ import annotations

import json
import urllib.error
from datetime import datetime, timezone
import urllib.request
from typing import Any

import click

from agentstream.agents import AgentClient, InputOutcome
from agentstream.agents._cron import CRON_TYPE, CronSpec, cron_input, next_slot
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


NO_OUTCOME_EXIT = 3  # the input is on the broker, but no processor said what became of it in time

wait_option = click.option("--wait/--no-wait", default=True, show_default=True,
                           help="Wait until a processor applied or rejected the input (exit 1 if rejected).")
timeout_option = click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0),
                              help="Seconds --wait waits for the outcome (exit 3 when it does not come).")


async def outcome_of(client: AgentClient, agent_id: str, input_id: str, wait: bool, timeout: float
                     ) -> InputOutcome | None:
    """The input's outcome when waiting, None when not; a missing outcome exits with NO_OUTCOME_EXIT."""
    if not wait:
        return None
    try:
        return await client.input_outcome(agent_id, input_id, timeout=timeout)
    except TimeoutError as exc:
        click.echo(json.dumps({"agent_id": agent_id, "input_id": input_id, "outcome": "unknown"}))
        click.echo(f"Error: {exc}. The input is on the broker: `agentstream state {agent_id}` shows whether it "
                   "was applied later.", err=True)
        raise SystemExit(NO_OUTCOME_EXIT) from exc


def report(shown: dict[str, Any], outcome: InputOutcome | None) -> None:
    """Print what was sent (and its outcome); a rejected input exits 1 with the reason on stderr."""
    if outcome is not None:
        shown["outcome"] = outcome.outcome
        if outcome.rejected:
            shown.update(reason_code=outcome.reason_code, reason=outcome.reason)
    click.echo(json.dumps(shown))
    if outcome is not None and outcome.rejected:
        raise click.ClickException(f"the input was rejected ({outcome.reason_code}): {outcome.reason}")
    if outcome is not None and outcome.outcome == "parked":
        click.echo(f"Note: agent {shown['agent_id']} is stuck; the input is kept and applies once the agent is "
                   "fixed (`agentstream state` shows its error).", err=True)


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
@click.option("--cron", metavar="EXPR", help="Start a run on every slot of this cron expression, durably, until "
              "`agentstream cancel <schedule id>` (e.g. '*/5 * * * *'; a sixth field is seconds). --id names the "
              "schedule; each run's ID is <schedule id>@<slot>.")
@click.option("--timezone", "tz", default="UTC", show_default=True, help="Time zone of --cron's slots (IANA name).")
@wait_option
@timeout_option
@app_option
@app_dir_option
def schedule(agent_type: str, agent_id: str | None, input_json: str | None, idempotency_key: str | None,
             cron: str | None, tz: str, wait: bool, timeout: float, app: str | None, app_dir: str | None) -> None:
    """Schedule an agent of AGENT_TYPE (or, with --cron, a run of it on every slot); prints its agent ID,
    run ID and the schedule's outcome."""
    conf = settings()
    payload = parse_json(input_json, "--input")
    check_agent_type(agent_type, known_agent_types(conf.api_url, app, app_dir, bearer_headers(conf)))
    if cron is not None:
        try:
            payload = cron_input(agent_type, cron, payload, tz)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--cron/--timezone") from None
        agent_id = agent_id or f"cron-{agent_type}-{__import__('uuid').uuid4().hex[:8]}"
        agent_type = CRON_TYPE
    agent_id = agent_id or f"{agent_type}-{__import__('uuid').uuid4().hex[:12]}"

    async def send() -> tuple[str, InputOutcome | None]:
        async with AgentClient(conf) as client:
            run_id = await client.schedule_agent(agent_type, agent_id, payload, idempotency_key=idempotency_key)
            return run_id, await outcome_of(client, agent_id, run_id, wait, timeout)

    run_id, outcome = run_async(send())
    shown: dict[str, Any] = {"agent_id": agent_id, "run_id": run_id}
    if cron is not None:
        spec = CronSpec.model_validate(payload)
        shown.update(schedule=f"{spec.agent_type} on '{spec.cron}' ({spec.timezone})",
                     first_slot=next_slot(spec, datetime.now(timezone.utc)).isoformat())
    report(shown, outcome)


@cli.command()
@click.argument("agent_id")
@click.argument("event")
@click.argument("payload", required=False, metavar="[JSON]")
@click.option("--idempotency-key", help="Drop repeated events with the same key.")
@wait_option
@timeout_option
def send(agent_id: str, event: str, payload: str | None, idempotency_key: str | None, wait: bool,
         timeout: float) -> None:
    """Send EVENT with an optional JSON payload to the agent AGENT_ID; prints its message ID and outcome."""
    conf = settings()
    value = parse_json(payload, "the event payload")

    async def deliver() -> tuple[str, InputOutcome | None]:
        async with AgentClient(conf) as client:
            message_id = await client.send_agent_event(agent_id, event, value, idempotency_key=idempotency_key)
            return message_id, await outcome_of(client, agent_id, message_id, wait, timeout)

    message_id, outcome = run_async(deliver())
    report({"agent_id": agent_id, "event": event, "message_id": message_id}, outcome)


@cli.command()
@click.argument("agent_id")
@click.option("--reason", help="Why, recorded on the agent.")
@wait_option
@timeout_option
def cancel(agent_id: str, reason: str | None, wait: bool, timeout: float) -> None:
    """Cancel the agent AGENT_ID; prints the cancel's message ID and outcome."""
    conf = settings()

    async def deliver() -> tuple[str, InputOutcome | None]:
        async with AgentClient(conf) as client:
            message_id = await client.cancel_agent(agent_id, reason)
            return message_id, await outcome_of(client, agent_id, message_id, wait, timeout)

    message_id, outcome = run_async(deliver())
    report({"agent_id": agent_id, "message_id": message_id}, outcome)


@cli.command()
@click.argument("agent_id")
def state(agent_id: str) -> None:
    """Print the state of the agent AGENT_ID as JSON (asks AGENTSTREAM_API_URL)."""
    conf = settings()

    async def fetch() -> dict[str, Any]:
        async with AgentClient(conf) as client:
            return await client.get_agent_state(agent_id)

    click.echo(json.dumps(run_async(fetch()), indent=2))


@cli.command("list")
@click.option("--status", "statuses", multiple=True, help="Only agents with this status (repeatable): running, "
              "completed, failed, cancelled, stuck.")
@click.option("--type", "types", multiple=True, help="Only agents of this type (repeatable).")
@click.option("--prefix", default="", help="Only agents whose ID starts with this.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer instead of a table.")
def list_agents(statuses: tuple[str, ...], types: tuple[str, ...], prefix: str, limit: int, as_json: bool) -> None:
    """List agents across all processors, with their type and status (asks AGENTSTREAM_API_URL)."""
    conf = settings()

    async def fetch() -> dict[str, Any]:
        async with AgentClient(conf) as client:
            return await client.list_agents(status=list(statuses), agent_type=list(types), prefix=prefix, limit=limit)

    answer = run_async(fetch())
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    rows = [(a["agent_id"], a.get("agent_type") or "", a.get("status") or "", (a.get("updated_at") or "")[:19])
            for a in answer["agents"]]
    widths = [max([len(h), *(len(str(r[i])) for r in rows)]) for i, h in enumerate(("AGENT", "TYPE", "STATUS"))]
    click.echo(f"{'AGENT':{widths[0]}}  {'TYPE':{widths[1]}}  {'STATUS':{widths[2]}}  UPDATED")
    for agent_id, agent_type, status, updated in rows:
        click.echo(f"{agent_id:{widths[0]}}  {agent_type:{widths[1]}}  {status:{widths[2]}}  {updated}")
    more = " (more match: raise --limit or filter)" if answer.get("truncated") else ""
    click.echo(f"{len(rows)} agents from {answer.get('processors', 1)} processor(s){more}", err=True)
    for missing in answer.get("unreachable", []):
        click.echo(f"Warning: processor {missing['processor']} did not answer ({missing['error']}); its agents "
                   "are missing", err=True)


@cli.command("dead-letters")
@click.option("--agent", "agent_id", help="Only the records rejected for this agent.")
@click.option("--reason", "reasons", multiple=True, help="Only this reason code (repeatable), e.g. unknown_event.")
@click.option("--follow", is_flag=True, help="Keep waiting for new ones (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter, the rejected record included.")
def dead_letters(agent_id: str | None, reasons: tuple[str, ...], follow: bool, as_json: bool) -> None:
    """Print the records agentstream rejected, oldest first, each with why."""
    conf = settings()

    async def read() -> int:
        shown = 0
        async with AgentClient(conf) as client:
            async for letter in client.dead_letters(agent_id, follow=follow):
                if reasons and letter.reason_code not in reasons:
                    continue
                shown += 1
                if as_json:
                    click.echo(letter.model_dump_json())
                    continue
                value = letter.value if len(letter.value) <= 200 else letter.value[:197] + "..."
                click.echo(f"{letter.rejected_at:%Y-%m-%d %H:%M:%S} {letter.key or '-'}  {letter.reason_code}: "
                           f"{letter.reason}\n    {letter.source_topic} partition {letter.partition} offset "
                           f"{letter.offset}, rejected by {letter.rejected_by}: {value}")
        return shown

    try:
        count = run_async(read())
    except KeyboardInterrupt:
        return
    click.echo(f"{count} dead letters", err=True)
