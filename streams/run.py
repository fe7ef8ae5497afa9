"""Entry points of the long-running pods: processor and worker (used by the CLI).

Each entry point imports what only it needs when it runs: a processor never loads the
worker's runner (and the `openai` client its LLM steps use), a worker never loads Faust.
Imports are most of a pod's start, and a restart's start is downtime (W3, bench/workloads.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from agentstream.agents._registry import function_definitions
from agentstream.topics import TopicNames

from .broker.profile import BrokerProfile, detect_profile
from .kafka import check_copartitioned
from .logs import configure_logging
from .membership import PreviousMember, leave_for, processor_member_file
from .metrics_registry import pod_registry
from .security import kafka_options, secret_values
from . import tracing
from .settings import Settings

log = logging.getLogger("agentstream")


def tune_gc() -> None:
    """No garbage collection over what the pod's start created.

    The objects alive once the pod is set up (modules, classes, registries) are frozen: a
    full collection never walks them again. They are frozen as they are, without a
    collection first: that found about 50 unreachable objects among 86,000 and cost 50 ms
    of every start, which is downtime after a crash (W3). (Raising the collection
    thresholds as well, to 20,000/20/20, cost 2.3 kB of RSS per idle agent in the memory
    row: 215 MB instead of 191 MB at 10,000 agents; so Python's thresholds stay.)
    """
    gc.freeze()


async def _prepare_processor(settings: Settings) -> tuple[BrokerProfile, int]:
    from .processor.statedir import changelog_topic, prepare_state_dir

    security = kafka_options(settings)
    profile = await detect_profile(settings.kafka_bootstrap, settings.embedded_broker, security)
    partitions = await check_copartitioned(settings.kafka_bootstrap, TopicNames(settings.topic_prefix), security,
                                           changelog=changelog_topic(settings.app_id))
    await prepare_state_dir(settings)  # before Faust opens the tables: state of another run is set aside
    if settings.instance_id is None:  # static members get their place back from Kafka itself
        left_behind = PreviousMember(processor_member_file(settings.data_dir), settings.app_id).left_behind()
        if left_behind is not None:  # this data dir's last processor was killed: its member would hold up the join
            await leave_for(left_behind, settings.kafka_bootstrap, settings.app_id, security,
                            only_if_alone=profile.embedded)
    return profile, partitions


def run_processor(settings: Settings, http_host: str, http_port: int, advertise_host: str | None = None) -> None:
    """Check the topics, then run the Faust app until SIGTERM/SIGINT. Blocks."""
    import faust

    from .processor import create_processor

    configure_logging(settings.log_format, settings.log_level, secret_values(settings))
    tracing.configure("agentstream-processor")
    profile, partitions = asyncio.run(_prepare_processor(settings))
    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run closed the previous one
    processor = create_processor(
        settings, profile, partitions, http_host=http_host, http_port=http_port, advertise_host=advertise_host
    )
    log.info(
        "processor starting",
        extra={"bootstrap": settings.kafka_bootstrap, "partitions": partitions, "http": f"http://{http_host}:{http_port}",
               "embedded_broker": profile.embedded, "data_dir": str(settings.data_dir)},
    )
    worker = faust.Worker(
        processor.app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        logging_config=dict(processor.app.conf.logging_config or {}),
    )
    # Faust's terminal spinner sets the root logger to DEBUG when the level is WARNING or above:
    # every debug call of every library then built a record that the handler dropped.
    worker.spinner = None
    tune_gc()
    try:
        worker.execute_from_commandline()
    finally:
        tracing.shutdown()  # the spans still buffered are sent


def run_worker(settings: Settings, task_queue: str | None, http_host: str, http_port: int) -> None:
    """Run a step worker and its HTTP server until SIGTERM/SIGINT. Blocks."""
    from .worker import StepWorker, WorkerMetrics
    from .worker.http import serve_http

    configure_logging(settings.log_format, settings.log_level, secret_values(settings))
    tracing.configure("agentstream-worker")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        profile = await detect_profile(settings.kafka_bootstrap, settings.embedded_broker, kafka_options(settings))
        registry = pod_registry()
        metrics = WorkerMetrics.create(registry)
        metrics.start_at_zero(function_definitions())
        worker = StepWorker(settings, profile, metrics, task_queue=task_queue)
        runner = await serve_http(registry, worker.started.is_set, http_host, http_port)
        log.info("worker starting", extra={"topic": worker.topic, "http": f"http://{http_host}:{http_port}"})
        try:
            await worker.run(stop)
        finally:
            await runner.cleanup()

    tune_gc()
    try:
        asyncio.run(main())
    finally:
        tracing.shutdown()
