"""`agentstream dev`, `demo` and `broker`: everything on one machine, on the embedded broker or Apache Kafka."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from ..broker.apache import DEV_FOLDER, ApacheKafkaCluster, dev_cluster, kafka_version
from ..broker.embedded import EmbeddedBroker
from ..devstack import DevStack
from ..settings import DEFAULT_BOOTSTRAP, Settings
from . import PROCESSOR_PORT, WORKER_PORT, app_dir_option, app_option, cli, run_async
from ._dev_logs import LogFollower
from ._loading import load_app

DEMO_APP = "examples.taskprocessor"
# The CLI's and the client's defaults (Settings), so that nothing needs exporting.
DEV_PORTS = {"broker": int(DEFAULT_BOOTSTRAP.rsplit(":", 1)[1]), "http": PROCESSOR_PORT, "worker": WORKER_PORT}


def _external_bootstrap() -> str | None:
    """A bootstrap set in the environment turns the embedded broker off."""
    return os.environ.get("AGENTSTREAM_KAFKA_BOOTSTRAP") or None


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT both raise KeyboardInterrupt (the clean way out).

    SIGINT is set explicitly: a process started in the background of a script inherits
    SIGINT as ignored, and `kill -INT` must still stop it (CI runs the suite that way,
    and its tests stop `dev` with SIGINT).
    """
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)


def _progress(message: str) -> None:
    click.echo(click.style("• ", fg="cyan") + message, err=True)


def _serve_until_interrupted(stack: DevStack) -> None:
    """Print the components' agent logs, rejections and warnings (`_dev_logs.py`) until Ctrl-C."""
    follower = LogFollower({c.name: c.log_path for c in (stack.processor, stack.worker)})
    try:
        while True:
            for line in follower.new_lines():
                click.echo(line)
            for component in (stack.processor, stack.worker):
                if component.process is not None and component.process.poll() is not None:
                    raise click.ClickException(
                        f"{component.name} exited with code {component.process.returncode}:\n{component.log_tail()}"
                    )
            time.sleep(0.5)
    except KeyboardInterrupt:
        _progress("stopping ...")


def preferred_port(port: int) -> int | None:
    """`port` if nothing listens there now, else None (a free one is picked).

    SO_REUSEADDR as the servers bind (aiohttp, the broker): connections of a stack that just
    stopped, lingering in TIME_WAIT, do not keep the port from the next one."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return None
    return port


def _print_addresses(stack: DevStack) -> None:
    broker = "embedded broker" if stack.broker else "external broker"
    if isinstance(stack.broker, ApacheKafkaCluster):
        broker = f"Apache Kafka, data in {stack.broker.folder}"
    lines = [
        ("Kafka bootstrap", f"{stack.bootstrap}  ({broker})"),
        ("HTTP API", stack.processor.url),
        ("processor metrics", f"{stack.processor.url}/metrics"),
        ("worker metrics", f"{stack.worker.url}/metrics"),
        ("logs", str(stack.workdir)),
    ]
    for label, value in lines:
        click.echo(f"  {label:18} {value}")
    if stack.bootstrap == DEFAULT_BOOTSTRAP and stack.processor.url == Settings.model_fields["api_url"].default:
        click.echo("\nOn the default ports: the CLI and AgentClient() find it without any AGENTSTREAM_* variable.")
    else:
        click.echo(
            f"\nIn another shell:\n  export AGENTSTREAM_KAFKA_BOOTSTRAP={stack.bootstrap} "
            f"AGENTSTREAM_API_URL={stack.processor.url}"
        )


def _start(stack: DevStack) -> None:
    """Start the stack; SIGTERM and Ctrl-C during start-up stop whatever already runs.

    """
    _stop_on_signals()
    try:
        stack.start(progress=_progress)
    except KeyboardInterrupt:
        stack.stop()
        raise click.Abort() from None
    except Exception as exc:
        stack.stop(keep_logs=True)
        raise click.ClickException(f"{exc}\n(logs kept in {stack.workdir})") from exc


@cli.command()
@app_option
@app_dir_option
@click.option("--broker-port", type=int, default=None,
              help=f"Embedded broker port (default: {DEV_PORTS['broker']} if free, else a free one).")
@click.option("--http-port", type=int, default=None,
              help=f"Processor HTTP port (default: {DEV_PORTS['http']} if free, else a free one).")
@click.option("--worker-http-port", type=int, default=None,
              help=f"Worker HTTP port (default: {DEV_PORTS['worker']} if free, else a free one).")
@click.option("--any-ports", is_flag=True, help="Free ports instead of the defaults (several dev stacks at once).")
@click.option("--partitions", type=int, default=4, show_default=True)
@click.option("--broker", "broker_kind", type=click.Choice(["embedded", "apache"]), default="embedded",
              show_default=True, help="embedded: in memory, gone when dev stops. apache: Apache Kafka (needs java 17 "
              "and mvn), keeping topics and the processor's state in --data-dir across restarts.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --broker apache: where the broker's data, the processor's state and the logs stay "
              "[default: .agentstream].")
def dev(app: str | None, app_dir: str | None, broker_port: int | None, http_port: int | None,
        worker_http_port: int | None, any_ports: bool, partitions: int, broker_kind: str,
        data_dir: Path | None) -> None:
    """Run broker, topics, processor, worker and HTTP API in one command; Ctrl-C stops all.

    It prints the agents' logs, rejected inputs and warnings as they happen. On the
    default ports (the CLI's and the client's defaults too) no AGENTSTREAM_* variable
    is needed in another shell.
    """
    if data_dir is not None and broker_kind != "apache":
        raise click.UsageError("--data-dir keeps data of --broker apache; the embedded broker keeps nothing")
    external = _external_bootstrap()
    if external and broker_kind == "apache":
        raise click.UsageError(f"--broker apache starts its own broker, but AGENTSTREAM_KAFKA_BOOTSTRAP={external} "
                               "is set: unset it, or drop --broker")
    load_app(app, app_dir)  # fail fast on a bad --app, before starting anything
    if not any_ports:
        if broker_kind == "embedded" and not external:
            broker_port = broker_port or preferred_port(DEV_PORTS["broker"])
        http_port = http_port or preferred_port(DEV_PORTS["http"])
        worker_http_port = worker_http_port or preferred_port(DEV_PORTS["worker"])
    stack = DevStack(app or "", app_dir=Path(app_dir) if app_dir else None, broker_port=broker_port,
                     http_port=http_port, worker_http_port=worker_http_port, partitions=partitions,
                     external_bootstrap=external, broker="apache" if broker_kind == "apache" else "embedded",
                     data_dir=data_dir)
    _start(stack)
    try:
        click.echo("agentstream dev is running" + (f" with --app {app}" if app else " (no --app: no agent types)"))
        _print_addresses(stack)
        click.echo("\nPress Ctrl-C to stop.")
        _serve_until_interrupted(stack)
    finally:
        stack.stop()


async def _run_demo(stack: DevStack) -> dict[str, Any]:
    from agentstream.agents import AgentClient

    async with AgentClient(bootstrap=stack.bootstrap, api_url=stack.processor.url) as client:
        agent_id = "demo-taskprocessor"
        run_id = await client.schedule_agent("TaskProcessor", agent_id)
        _progress(f"scheduled TaskProcessor as {agent_id} (run {run_id[:8]})")
        events: list[tuple[str, Any]] = [
            ("configure", {"max_retries": 5}),
            ("add_task", {"id": "task-001", "action": "process"}),
            ("add_task", {"id": "task-002", "action": "review"}),
            ("shutdown", None),
        ]
        for name, payload in events:
            await client.send_agent_event(agent_id, name, payload)
        _progress(f"sent {len(events)} events: {', '.join(n for n, _ in events)}")
        try:
            result = await client.get_agent_result(agent_id, timeout=60)
        except TimeoutError as exc:
            raise click.ClickException(f"{exc}; logs in {stack.workdir}") from exc
        _progress(f"the agent ran its steps and returned {json.dumps(result)}")
        return await client.get_agent_state(agent_id)


@cli.command()
@click.option("--keep-serving", is_flag=True, help="Keep everything running after the demo (Ctrl-C stops).")
@click.option("--llm", is_flag=True, help="Chat with the example airline LLM agent instead, its answers streamed "
              "(a scripted model unless OPENAI_API_KEY or AGENTSTREAM_LLM_BASE_URL is set).")
def demo(keep_serving: bool, llm: bool) -> None:
    """Schedule the example TaskProcessor, send it events, print its state, then exit."""
    from . import _llm_demo

    model = _llm_demo.start_model(_progress) if llm else None
    stack = DevStack(_llm_demo.APP if llm else DEMO_APP, external_bootstrap=_external_bootstrap())
    _start(stack)
    try:
        if llm:
            run_async(_llm_demo.converse(stack, _progress))
        else:
            click.echo(json.dumps(run_async(_run_demo(stack)), indent=2))
        click.echo(f"\nmetrics: {stack.processor.url}/metrics")
        if keep_serving:
            _print_addresses(stack)
            click.echo("\nPress Ctrl-C to stop.")
            _serve_until_interrupted(stack)
        else:
            click.echo("demo finished; stopping everything (use --keep-serving to keep it running)")
    finally:
        stack.stop()
        if model is not None:
            model.stop()


@cli.command()
@click.option("--port", type=int, default=None, help="Port to listen on (default: a free one; with --apache the "
              "one it had last time).")
@click.option("--apache", is_flag=True, help="Run Apache Kafka (needs java 17 and mvn; its jars come from Maven "
              "Central once), keeping topics in --data-dir across restarts.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"With --apache: the broker's folder [default: {DEV_FOLDER}].")
def broker(port: int | None, apache: bool, data_dir: Path | None) -> None:
    """Run only a broker: the embedded one (in memory: stopping it loses every topic) or Apache Kafka."""
    if data_dir is not None and not apache:
        raise click.UsageError("--data-dir is the folder of --apache; the embedded broker keeps nothing")
    if apache:
        _serve_apache(dev_cluster(data_dir or DEV_FOLDER, port))
        return
    embedded = EmbeddedBroker(port=port)
    try:
        embedded.start()
    except Exception as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"embedded broker listening on {embedded.bootstrap}")
    click.echo(f"  export AGENTSTREAM_KAFKA_BOOTSTRAP={embedded.bootstrap}")
    _stop_on_signals()
    try:
        while embedded._process is not None and embedded._process.poll() is None:
            time.sleep(0.5)
        raise click.ClickException("the embedded broker exited unexpectedly")
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()


def _serve_apache(cluster: ApacheKafkaCluster) -> None:
    """Start the single-node cluster, wait for Ctrl-C or SIGTERM, stop it cleanly (data kept)."""
    _progress(f"starting Apache Kafka {kafka_version()} in {cluster.folder} (the first run fetches its jars "
              "through Maven) ...")
    _stop_on_signals()
    try:
        try:
            cluster.start()
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"Apache Kafka listening on {cluster.bootstrap} (data in {cluster.folder}, kept across restarts)")
        click.echo(f"  export AGENTSTREAM_KAFKA_BOOTSTRAP={cluster.bootstrap}")
        while all(node.pid is not None for node in cluster.nodes):
            time.sleep(0.5)
        raise click.ClickException(f"Apache Kafka exited unexpectedly; see {cluster.nodes[0].folder / 'server.log'}")
    except KeyboardInterrupt:
        _progress("stopping Apache Kafka ...")
    finally:
        cluster.stop()
