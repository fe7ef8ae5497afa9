"""The `agentstream` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from agentstream.topics import AgentstreamError, TopicNames

from ..security import kafka_options
from ..settings import Settings
from ._loading import load_app

T = TypeVar("T")
PROCESSOR_PORT, WORKER_PORT = 6066, 6067  # the HTTP ports `processor` and `worker` (and `dev`) use by default

app_option = click.option("--app", "app", metavar="MODULE", help="Module that defines your agents and functions.")
app_dir_option = click.option("--app-dir", metavar="DIR", help="Folder to import --app from (default: current).")


def settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's message names the offending variable
        raise click.ClickException(f"invalid AGENTSTREAM_* settings: {exc}") from exc


def run_async(coro: Awaitable[T]) -> T:
    """Run a coroutine, turning our errors into a clean CLI message (exit code 1)."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except AgentstreamError as exc:
        raise click.ClickException(str(exc)) from exc


def parse_json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{what} is not valid JSON ({exc.msg} at column {exc.colno}): {value!r}. "
            """Quote it for the shell, e.g. '{"id": "t1"}'."""
        ) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agentstream")
def cli() -> None:
    """agentstream: durable, long-running AI agents on Kafka."""


@cli.command()
@app_option
@app_dir_option
@click.option("--http-host", default="127.0.0.1", show_default=True)
@click.option("--http-port", default=PROCESSOR_PORT, show_default=True, type=int)
@click.option(
    "--advertise-host",
    help="Host other processors use to forward requests here (default: --http-host, "
    "or the hostname when that is 0.0.0.0; env AGENTSTREAM_ADVERTISE_HOST). In Kubernetes, the pod IP.",
)
def processor(app: str | None, app_dir: str | None, http_host: str, http_port: int, advertise_host: str | None) -> None:
    """Run a stream processor (agents' state, HTTP API, /metrics)."""
    from ..run import run_processor

    load_app(app, app_dir)
    try:
        conf = settings()
        run_processor(conf, http_host, http_port, advertise_host or conf.advertise_host)
    except AgentstreamError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
@app_option
@app_dir_option
@click.option("--task-queue", default=None, help="Task queue to serve (default: AGENTSTREAM_TASK_QUEUE).")
@click.option("--http-host", default="127.0.0.1", show_default=True)
@click.option("--http-port", default=WORKER_PORT, show_default=True, type=int)
def worker(app: str | None, app_dir: str | None, task_queue: str | None, http_host: str, http_port: int) -> None:
    """Run a step worker for one task queue."""
    from ..run import run_worker

    load_app(app, app_dir)
    try:
        run_worker(settings(), task_queue, http_host, http_port)
    except AgentstreamError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.group()
def topics() -> None:
    """Create and inspect agentstream's topics."""


@topics.command("create")
@click.option("--partitions", type=int, default=None, help="Default: AGENTSTREAM_PARTITIONS.")
@click.option("--task-queue", "task_queues", multiple=True, help="Also create step-commands.<queue> (repeatable).")
def topics_create(partitions: int | None, task_queues: tuple[str, ...]) -> None:
    """Create missing topics (idempotent) and check that inputs are co-partitioned."""
    from ..kafka import check_copartitioned, ensure_topics

    conf = settings()
    names = TopicNames(conf.topic_prefix)
    specs = conf.topic_specs(partitions, task_queues or None)  # replication and min.insync.replicas from settings

    async def create() -> tuple[list[str], int]:
        security = kafka_options(conf)
        created = await ensure_topics(conf.kafka_bootstrap, specs, security)
        return created, await check_copartitioned(conf.kafka_bootstrap, names, security)

    created, count = run_async(create())
    for spec in specs:
        click.echo(f"{'created' if spec.name in created else 'exists '}  {spec.name}")
    click.echo(f"agent-events and step-results share {count} partitions")


@topics.command("list")
def topics_list() -> None:
    """Show agentstream's topics and their partition counts."""
    from ..kafka import partition_counts

    conf = settings()
    names = TopicNames(conf.topic_prefix)
    wanted = [s.name for s in names.specs(1)]

    async def fetch() -> dict[str, int]:
        from ..kafka import admin_client

        security = kafka_options(conf)
        async with admin_client(conf.kafka_bootstrap, security) as admin:
            all_topics = await admin.list_topics()
        ours = sorted({*wanted, *(t for t in all_topics if t.startswith(conf.topic_prefix))})
        return await partition_counts(conf.kafka_bootstrap, ours, security)

    counts = run_async(fetch())
    for name in sorted(set(wanted) | set(counts)):
        click.echo(f"{name:60} {counts.get(name, 'missing')}")


from . import _approval_commands, _client_commands, _dev, _follow_commands  # noqa: E402  (they register commands on `cli`)


def main() -> None:
    cli(prog_name="agentstream")


__all__ = ["cli", "main"]
