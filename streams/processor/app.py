"""The processor: a Faust app that owns agents' records in a RocksDB table.

One Faust agent reads `agent-events` and `step-results` (co-partitioned), so all
inputs of an agent meet in one place; the table is keyed by agent ID and backed by a
compacted changelog topic, which is how another processor restores it after a crash
or a rebalance.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable
from functools import partial
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import faust
from faust.types import TP
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.stores.rocksdb import RocksDBOptions
from prometheus_client import CollectorRegistry

from agentstream.topics import AgentStatus, TimerFired, TopicNames

from ..broker.profile import BrokerProfile
from ..exceptions import TopicsNotCopartitionedError
from ..kafka import partitions_changed
from ..engine import DedupPolicy, DurableEngine, Engine, EngineConfig
from ..logs import logging_config
from ..membership import PreviousMember, processor_member_file
from ..security import faust_credentials, kafka_options, secret_values
from ..metrics_registry import pod_registry
from ..settings import Settings
from .auth import protect
from .handler import InputHandler
from .lanes import AgentLanes
from .local_steps import ProcessorLocalSteps
from .positions import InputPositions, read_range
from . import committed_fix, fetch_fix, metadata_fix, recovery_fix, startup_fix, static_member
from .publish import FaustPublisher, FaustTableStore
from .changelog_order import ChangelogOrder
from .restore_check import RestoreCheck
from .restore_point import RestorePoint
from .metrics import ProcessorMetrics
from .timers import TimerIndex, TimerService
from .views import PublicViews
from .window import InputWindow
from .commits import InputCommits
from .web import register_views

TABLE_NAME = "agents"
PARTITION_CHECK_S = 10.0  # how often a processor checks that its inputs kept their partition count
# How often handled inputs are committed (commits.py; Faust's default is 2.8 s). Every input not yet
# committed when a processor dies is read again by the next owner and costs a turn's
# overhead to recognise as a duplicate: with 2.8 s, a restart a few seconds after the last
# one re-read a thousand inputs (W3 at H=2,000 took 2 s longer than at H=100). A commit is
# one request, so committing often is cheap.
COMMIT_INTERVAL_S = 0.5
log = logging.getLogger("agentstream.processor")


def package_version() -> str:
    try:
        return version("agentstream")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


@dataclass
class Processor:
    app: faust.App
    table: Any
    handler: InputHandler
    metrics: ProcessorMetrics
    registry: CollectorRegistry
    names: TopicNames
    views: PublicViews  # what GET /agents/{id} answers, kept until the agent's record changes
    store: FaustTableStore  # the agents' records; reads wait on it for a write in flight (`caught_up`)
    security: dict[str, Any] = field(default_factory=dict)  # aiokafka TLS/SASL options of its own readers
    api_token: str | None = None  # what its HTTP API demands, and sends when it forwards a request
    _consumer_started: bool = field(default=False, init=False)

    def is_ready(self) -> bool:
        """True when the consumer has its assignment and tables finished restoring."""
        app = self.app
        try:
            consumer = app.consumer
        except Exception:  # not started yet
            return False
        recovery = app.tables.recovery  # type: ignore[attr-defined]
        if app.rebalancing or not recovery.completed.is_set() or recovery.in_recovery:
            return False
        if not self._consumer_started:  # asked once: building the assignment's set was 4% of W1's CPU
            self._consumer_started = consumer.assignment() is not None
        return self._consumer_started

    def assigned_partitions(self) -> int:
        return len(self.owned_partitions())

    def owned_partitions(self) -> list[int]:
        """The partitions of agent-events (and so of the agents' table) assigned to this processor."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:
            return []
        return sorted(tp.partition for tp in assignment if tp.topic == self.names.agent_events)


def _count_of(index: TimerIndex, status: str) -> float:
    return float(index.count(status))  # kept by the index as agents change: O(1) per scrape


def changelog_configs(settings: Settings) -> dict[str, str]:
    """Topic configs of the table's changelog beyond Faust's `cleanup.policy=compact`.

    Faust applies them when it creates the changelog (never to an existing one):
    `min.insync.replicas` like every other topic, then `changelog_topic_configs`, where a
    test or a deployment tunes how soon the broker compacts (segment.ms,
    min.cleanable.dirty.ratio, max.compaction.lag.ms).
    """
    extra = {key: str(value) for key, value in settings.changelog_topic_configs.items()}
    return {**settings.topic_configs(), **extra}


def rocksdb_options() -> dict[str, int]:
    """RocksDB settings of each table partition (Faust's options for its store).

    Faust's defaults keep up to three 64 MB memtables and a 2 GB block cache per
    partition: an idle agent's record then stays in memory (and in the uncompressed
    write-ahead log) until 64 MB have filled. Small memtables flush early into compressed
    files, and a small block cache bounds what reads keep (the record of an agent in use
    is read back from the memtable, the block cache or the OS page cache). Measured with
    100,000 idle agents on one processor: 403 MB RSS and 1.25 kB per agent on disk with
    Faust's defaults, 293 MB and 0.45 kB with these.
    A fresh dict each time: Faust pops keys from the one it is given.
    """
    return {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 16 << 20}


class PartitionOptions(RocksDBOptions):
    """Faust's RocksDB options for a table partition, with a bounded info log.

    RocksDB writes an info log (`LOG`) into each partition's folder. By default it never
    rolls it by size and keeps up to 1,000 old ones, one more at every open: measured, it
    grows by about 1.5 kB per MB of records written, so a processor writing 5 MB/s (about
    600 turns/s of 8 kB records, W1's load) would add 0.6 GB a day to its volume, for as
    long as it runs.
    Faust has no option for it, so its store gets these options instead of its own.
    """

    info_log_bytes = 1 << 20  # a partition's current log rolls over past this size
    info_log_files = 3  # and it keeps this many log files, the current one included

    def as_options(self) -> Any:
        options = super().as_options()
        if self.use_rocksdict:  # rocksdict is what the processor installs (python-rocksdb takes no such setters)
            options.set_max_log_file_size(self.info_log_bytes)
            options.set_keep_log_file_num(self.info_log_files)
        return options


def create_processor(
    settings: Settings,
    profile: BrokerProfile,
    partitions: int,
    *,
    http_host: str = "127.0.0.1",
    http_port: int = 6066,
    advertise_host: str | None = None,
    engine: Engine | None = None,
) -> Processor:
    """Build (not start) a processor for the agent types registered in this process.

    `advertise_host` is how other processors reach this one when they forward
    `GET /agents/{id}` to it; by default `http_host`, or the hostname when binding to all
    interfaces.
    """
    if advertise_host is None:
        advertise_host = http_host if http_host not in ("0.0.0.0", "::") else socket.gethostname()
    names = TopicNames(settings.topic_prefix)
    brokers = [f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")]
    profile.apply_to_faust()
    recovery_fix.install()
    metadata_fix.install()  # a changelog Faust just created may be missing from the first metadata
    startup_fix.install()  # a restart, whose topics all exist, joins without Faust's second of waiting
    fetch_fix.install()  # partitions resumed after a recovery are fetched within 0.1 s, not a second
    committed_fix.install()  # the committed offsets of all assigned partitions in one request, not one each
    app = faust.App(
        settings.app_id,
        broker=brokers,
        store="rocksdb://",
        datadir=str(settings.data_dir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        web_bind=http_host,
        web_host=advertise_host,
        web_port=http_port,
        web_in_thread=False,
        # Faust's own pages list every partition's host (/router) and dump table rows (/table/...):
        # debugging aids that need not face a network. The API routes to owners without them.
        web_router_enabled=False,
        web_tables_enabled=False,
        logging_config=logging_config(settings.log_format, settings.log_level, secret_values(settings)),
        broker_credentials=faust_credentials(settings),
        consumer_group_instance_id=settings.instance_id,
        **profile.faust_options(),
    )
    recovery_fix.keep_fetched_changelog_records(app)
    protect(app, settings.api_token.get_secret_value() if settings.api_token else None)
    if settings.instance_id:
        static_member.guard_address(app, settings.instance_id)
    profile.apply_to_faust_app(app)
    table = app.Table(TABLE_NAME, key_type=bytes, value_type=bytes, partitions=partitions,
                      extra_topic_configs=changelog_configs(settings), options=rocksdb_options())
    faust_store: Any = table.data  # Faust's RocksDB store (typed as a plain mapping)
    faust_store.rocksdb_options = PartitionOptions(**rocksdb_options(), use_rocksdict=faust_store.use_rocksdict)
    RestorePoint(table).install()
    ChangelogOrder(table).install()  # after the restore point: it hands acknowledgements on to it
    views = PublicViews(read=table.get)
    store = FaustTableStore(table, views)
    store.install()  # last: a record reaches RocksDB before the restore point persists its offset
    security = kafka_options(settings)
    restore_check = RestoreCheck(table, settings.kafka_bootstrap, security)
    if settings.verify_restore:
        restore_check.install()  # every restore audited; without it, only where inputs show a hole (below)
    registry = pod_registry()
    metrics = ProcessorMetrics.create(registry)
    metrics.start_at_zero()
    metrics.build.info({"version": package_version(), "embedded_broker": str(profile.embedded).lower()})
    setup_prometheus_sensors(app, pattern="/metrics", registry=registry, name_prefix="agentstream_faust")

    identity = f"processor@{advertise_host}:{http_port}"
    engine = engine or DurableEngine(EngineConfig(
        task_queue=settings.task_queue,
        turn_timeout_s=settings.turn_timeout_seconds,
        turns=settings.turn_isolation,
        continue_as_new_after=settings.continue_as_new_after,
        max_record_bytes=settings.max_record_bytes,
        max_parked=settings.max_parked_inputs,
        dedup=DedupPolicy(settings.dedup_window_seconds, settings.dedup_max_keys),
        identity=identity,
    ), local_steps=ProcessorLocalSteps())
    publisher = FaustPublisher(app, max_bytes=settings.max_record_bytes)
    timer_index = TimerIndex()
    handler = InputHandler(
        timers=timer_index,
        names=names,
        engine=engine,
        store=store,
        publisher=publisher,
        metrics=metrics,
        identity=identity,
        max_record_bytes=settings.max_record_bytes,
        written=views.written,
    )
    processor = Processor(app, table, handler, metrics, registry, names, views, store, security,
                          settings.api_token.get_secret_value() if settings.api_token else None)
    metrics.assigned_partitions.set_function(processor.assigned_partitions)
    metrics.ready.set_function(lambda: 1.0 if processor.is_ready() else 0.0)
    metrics.pending_timers.set_function(timer_index.pending_timers)
    for status in AgentStatus:
        metrics.agents.labels(status.value).set_function(partial(_count_of, timer_index, status.value))

    # Faust's acks are off: the processor commits its inputs itself (commits.py says why).
    inputs = app.topic(names.agent_events, names.step_results, key_type=bytes, value_type=bytes, acks=False)

    def committed(source: str) -> int | None:  # as Faust read it when the partition was assigned
        topic, _, partition = source.rpartition("#")
        offset = app.consumer._committed_offset.get(TP(topic, int(partition)))  # type: ignore[attr-defined]
        return offset if isinstance(offset, int) else None

    positions = InputPositions(scan=lambda: (value for _, value in table.items()), committed=committed)
    reader_options = {**{k: v for k, v in profile.consumer_options().items() if k == "fetch_max_wait_ms"}, **security}
    commits: InputCommits[Any] = InputCommits()
    window: InputWindow[Any] = InputWindow(commits.done, commits.lost)  # an input is done once its writes are acknowledged

    async def commit(offsets: dict[Any, int]) -> bool:
        """Straight to the broker. Faust's own commit first flushes the producer, which under load
        took 0.5-1.3 s per commit; what is committed here is durable already."""
        if not await app.consumer._commit(offsets):  # type: ignore[attr-defined]
            return False
        app.monitor.on_tp_commit(offsets)  # Faust's committed-offset gauge
        return True

    lanes = AgentLanes()  # inputs of different agents apply side by side (lanes.py)

    def begin(event: Any) -> Awaitable[tuple[str, Awaitable[None]]]:
        message = event.message
        return handler.begin(message.topic, message.partition, message.offset, event.key, event.value, message.headers)

    @app.agent(inputs, name="agentstream.inputs")
    async def apply_inputs(stream: faust.StreamT[bytes]) -> None:
        # Each input takes its place in the window first, so a rebalance or a stop waits for it too
        # (wait_for_inputs); it is committed once it and every input before it are durable.
        generation = None
        try:
            async for event in stream.events():
                message = event.message
                place = await window.add(message.tp, message.offset)
                source = f"{message.topic}#{message.partition}"
                if app.rebalancing_count != generation:  # positions are read from the records: all applied first
                    generation = app.rebalancing_count
                    await lanes.idle()
                skipped_from = positions.missed(app.rebalancing_count, source, message.offset)
                if skipped_from is not None:  # the consumer skipped inputs the records do not reflect: first those
                    metrics.input_rewinds.inc()
                    log.warning("inputs skipped by the consumer are read again", extra={
                        "source": source, "from": skipped_from, "to": message.offset})
                    await lanes.idle()  # every input before them applied first, in order
                    # Or the restore lost records whose inputs lie before the committed offset: the
                    # changelog brings those back (restore_check.py), then the inputs are read again.
                    try:
                        if await restore_check.repair(message.partition):
                            views.reset()
                            timers.rescan()
                    except Exception as exc:  # the broker away: the inputs are still read again
                        log.warning("table not checked against its changelog", extra={
                            "partition": message.partition, "error": repr(exc)})
                    for missed in await read_range(settings.kafka_bootstrap, message.topic, message.partition,
                                                   skipped_from, message.offset, reader_options):
                        await handler.handle(missed.topic, missed.partition, missed.offset, missed.key, missed.value,
                                             missed.headers)
                        positions.handled(source, missed.offset)
                # The task runs in a copy of this context, where Faust's current event (a weak reference)
                # tells the table which partition a write goes to: the partial keeps the event alive.
                place.began(lanes.start(event.key, partial(begin, event)))
                positions.handled(source, message.offset)
        finally:
            await window.close()

    @app.timer(interval=COMMIT_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def commit_inputs() -> None:
        await commits.commit(app.consumer.assignment(), commit)

    wait_for_streams = app._consumer_wait_empty

    async def wait_for_inputs(consumer: Any, logger: Any) -> None:
        """Where Faust waits for its streams before partitions move and before it stops: every
        input taken is made durable and committed (else the next owner reads it again)."""
        await wait_for_streams(consumer, logger)
        await window.flushed()
        await commits.commit(consumer.assignment(), commit)

    app._consumer_wait_empty = wait_for_inputs  # type: ignore[method-assign]

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types receivers narrower than it calls them
    async def forget_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        commits.revoked(args[0])

    member = PreviousMember(processor_member_file(settings.data_dir), settings.app_id) if not settings.instance_id else None

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def note_member(sender: Any, *args: Any, **kwargs: Any) -> None:
        """For the next processor on this data dir, should this one be killed (membership.py)."""
        if member is not None:
            member.remember(app.consumer._thread._ensure_consumer()._coordinator.member_id)  # type: ignore[attr-defined]

    async def send_timer(fired: TimerFired) -> None:
        await publisher.publish(names.agent_events, fired.key, fired.to_bytes())

    def ownership() -> object | None:
        """None while not ready; else a token that changes with every rebalance (timers rescan then).

        The rebalance count is read before readiness: a rebalance that starts after this
        read bumps it, so a scan made during that rebalance is redone on a later tick.
        """
        rebalances = app.rebalancing_count
        if not processor.is_ready():
            return None
        return rebalances, frozenset(tp for tp in app.consumer.assignment() if tp.topic == names.agent_events)

    timers = TimerService(
        timer_index,
        read=store.get,  # the records as the handler last wrote them, acknowledged or not
        scan=store.values,
        assignment=ownership,
        send=send_timer,
        on_fire=metrics.timers_fired.inc,
        on_error=metrics.timer_tick_errors.inc,
    )

    @app.task  # type: ignore[untyped-decorator]
    async def fire_timers() -> None:
        await timers.run_forever()

    @app.timer(interval=PARTITION_CHECK_S)  # type: ignore[untyped-decorator]
    async def watch_partitions() -> None:
        """Stop the processor once partitions were added to its inputs (see `partitions_changed`)."""
        producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
        try:
            cluster = await producer.client.fetch_all_metadata()
        except Exception as exc:  # the broker away (a restart, an outage): check again on the next tick
            log.debug("partition check skipped", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        for topic in (names.agent_events, names.step_results):
            count = len(cluster.partitions_for_topic(topic) or ())
            if count and count != partitions:
                message = partitions_changed(topic, count, table.changelog_topic.get_topic_name(), partitions)
                log.error("input partitions changed: the processor stops", extra={"reason": message})
                await app.crash(TopicsNotCopartitionedError(message))
                return

    register_views(processor)
    return processor
