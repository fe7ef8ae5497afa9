"""CLI commands that wait on or check an agent: `result` (its result once it ends), `watch` (its
updates and live output as they happen, until it ends) and `replay` (its stored record
through the code about to be deployed).

Both exit 0 when the agent completed, 1 when it failed or was cancelled (the error on
stderr), and 3 (`result` only) when it did not end within `--timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import click

from agentstream.agents import AgentClient, AgentFailedError, AgentNotFoundError
from agentstream.topics import AgentStatus, AgentUpdate, StreamItem

from . import app_dir_option, app_option, cli, run_async, settings
from ._client_commands import NO_OUTCOME_EXIT
from ._loading import load_app

ENDED = {AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.CANCELLED}


@cli.command()
@click.argument("agent_id")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to wait for the agent to end (exit 3 when it does not).")
def result(agent_id: str, timeout: float) -> None:
    """Wait until the agent AGENT_ID ends and print what its run returned."""
    conf = settings()

    async def wait() -> Any:
        async with AgentClient(conf) as client:
            return await client.get_agent_result(agent_id, timeout=timeout)

    try:
        value = run_async(wait())
    except click.ClickException as exc:
        cause = exc.__cause__
        if isinstance(cause, AgentFailedError):
            click.echo(json.dumps({"agent_id": agent_id, "status": cause.status, "error": cause.error}))
            raise click.ClickException(f"agent {agent_id} {cause.status}: {cause.error}") from cause
        if isinstance(cause, TimeoutError):
            click.echo(f"Error: {cause}", err=True)
            raise SystemExit(NO_OUTCOME_EXIT) from cause
        raise
    click.echo(json.dumps({"agent_id": agent_id, "status": "completed", "result": value}))


@cli.command()
@click.argument("agent_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per update or stream event.")
def watch(agent_id: str, as_json: bool) -> None:
    """Follow the agent AGENT_ID: its status changes and notices (agent-updates) and its live output
    (agent-stream: text, tool calls), from the oldest kept, until its current run ends."""
    conf = settings()

    async def follow() -> AgentUpdate:
        async with AgentClient(conf) as client:
            try:
                run_id: str | None = (await client.get_agent_state(agent_id)).get("run_id")
            except AgentNotFoundError:
                run_id = None  # not scheduled yet: the first run that ends
            seen: asyncio.Queue[AgentUpdate | StreamItem] = asyncio.Queue()

            async def pump(source: Any) -> None:
                async with contextlib.aclosing(source):
                    async for item in source:
                        await seen.put(item)

            readers = [asyncio.ensure_future(pump(client.agent_updates(agent_id))),
                       asyncio.ensure_future(pump(client.stream(agent_id)))]
            cursor: str | None = None  # of the last stream event shown
            try:
                while True:
                    waiting = asyncio.ensure_future(seen.get())
                    done, _ = await asyncio.wait([waiting, *readers], return_when=asyncio.FIRST_COMPLETED)
                    for reader in readers:
                        if reader in done:
                            waiting.cancel()
                            reader.result()  # a reader that failed (the broker went away) says why
                    item = await waiting
                    if (isinstance(item, AgentUpdate) and item.status in ENDED and item.notice is None
                            and (run_id is None or item.run_id == run_id)):
                        ended = item
                        break
                    show(item, as_json)
                    if isinstance(item, StreamItem):
                        cursor = item.cursor
            finally:
                for reader in readers:
                    reader.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
            # The agent's output was all on agent-stream before it ended: show what the reader
            # had not got to (an agent that ended long ago), then the end.
            while not seen.empty():
                if isinstance(late := seen.get_nowait(), StreamItem):
                    show(late, as_json)
                    cursor = late.cursor
            async for rest in client.stream(agent_id, after=cursor, follow=False):
                show(rest, as_json)
            show(ended, as_json)
            return ended

    try:
        ended = run_async(follow())
    except KeyboardInterrupt:
        return
    if ended.status is not AgentStatus.COMPLETED:
        raise click.ClickException(f"agent {agent_id} {ended.status.value}: {ended.error}")


def show(item: AgentUpdate | StreamItem, as_json: bool) -> None:
    """One update or stream event, as JSON or as a readable line (text deltas run on inline)."""
    if as_json:
        source, model = ("update", item) if isinstance(item, AgentUpdate) else ("stream", item.event)
        click.echo(json.dumps({"source": source, **model.model_dump(mode="json")}))
        return
    if isinstance(item, AgentUpdate):
        when = f"{item.sent_at:%H:%M:%S} "
        if item.notice is not None:
            click.echo(f"\n{when}notice {json.dumps(item.notice)}")
            return
        change = f"{item.previous_status.value} -> " if item.previous_status else ""
        outcome = f"  result={json.dumps(item.result)}" if item.result is not None else ""
        outcome += f"  error={item.error}" if item.error else ""
        click.echo(f"\n{when}status {change}{item.status.value}{outcome}")
        return
    event = item.event
    if event.type == "text_delta":
        click.echo(str(event.data.get("text", "") if isinstance(event.data, dict) else event.data or ""), nl=False)
    else:
        click.echo(f"\n[{event.type}] {json.dumps(event.data)}")


@cli.command()
@click.argument("agent_ids", nargs=-1, metavar="[AGENT_ID]...")
@click.option("--file", "files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A stored record (JSON, as GET /agents/{id}/record answers) instead of asking the processor.")
@app_option
@app_dir_option
def replay(agent_ids: tuple[str, ...], files: tuple[Path, ...], app: str | None, app_dir: str | None) -> None:
    """Replay stored agents through the code of --app, before deploying it: exit 1 if any would take
    another path than it took (it would be parked as stuck with a NondeterminismError)."""
    if not agent_ids and not files:
        raise click.UsageError("name agents to replay (their IDs), or records with --file")
    from agentstream.agents.testing import replay_record  # the engine: loaded by this command only

    load_app(app, app_dir)
    records: list[Any] = [path.read_text(encoding="utf-8") for path in files]
    if agent_ids:
        conf = settings()

        async def fetch() -> list[dict[str, Any]]:
            async with AgentClient(conf) as client:
                return [await client.get_agent_record(agent_id) for agent_id in agent_ids]

        records += run_async(fetch())
    reports = [replay_record(record) for record in records]
    for report in reports:
        click.echo(("ok    " if report.ok else "FAILS ") + str(report))
    failed = sum(not r.ok for r in reports)
    if failed:
        raise click.ClickException(f"{failed} of {len(reports)} agents would not replay with this code; deploying it "
                                   "would park them as stuck")
