"""A worker: consume step commands of one task queue, run them, publish results.

Up to `worker_concurrency` steps run at once, each in its own task; a result is
published as soon as its step ends, whatever the others do. The consumer only takes
as many records as there are free slots. Offsets are committed per partition up to
(never past) the lowest record still running or whose result the broker has not yet
acknowledged, so a crash, a shutdown or a rebalance re-runs steps (at least once)
but never drops one.

A command this worker sees again (same message_id: a processor re-sends its in-flight
commands after a restart) is not run again: if it completed, the result it published
is sent again (see completed.py); if it is still running, the copy completes when that
attempt does. While an attempt runs, progress records (`started`, throttled heartbeats)
tell the processor what its durable timeouts need (see progress.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
)

from agentstream.agents._registry import FunctionDefinition, function_definitions
from agentstream.agents.llm._tools import TOOL_PREFIX
from agentstream.streams.stream_out import StreamWriter
from agentstream.topics import (
    DeadLetter,
    InvalidMessageError,
    StepCommand,
    StepError,
    StepProgress,
    StepResult,
    TopicNames,
    decode_step_command,
)

from .. import tracing
from ..broker.profile import BrokerProfile
from ..kafka import connection_failed
from ..security import kafka_options
from ..membership import PreviousMember, leave_for, worker_member_file
from ..settings import Settings
from .completed import CompletedCommands, Published
from . import llm as _llm  # noqa: F401 - registers the step agentstream.llm.call
from .execute import execute, outcome_label
from .llm_metrics import observe_llm_call
from .metrics import WorkerMetrics
from .progress import AttemptProgress, needs_started

log = logging.getLogger("agentstream.worker")

POLL_S = 0.2  # longest wait for records, or for a free slot, before the loop looks again
KEEPALIVE_POLL_S = 5.0  # poll at least this often even with no free slot (max.poll.interval is 300 s)
COMMIT_INTERVAL_S = 1.0  # commit progress at most this often (and on revocation and shutdown)
SHUTDOWN_GRACE_S = 5.0  # how long running steps may finish after the stop event


@dataclass
class _Partition:
    """Offsets of one partition in one assignment: fetched, not yet safe to commit."""

    pending: set[int] = field(default_factory=set)  # running, or result not yet acknowledged
    fetched_to: int = 0  # highest fetched offset + 1
    committed: int | None = None

    def fetched(self, offset: int) -> None:
        self.pending.add(offset)
        self.fetched_to = max(self.fetched_to, offset + 1)

    def safe_offset(self) -> int | None:
        """The offset to commit (None if unchanged): after every finished record, never past a pending one."""
        offset = min(self.pending) if self.pending else self.fetched_to
        return None if offset == self.committed or offset == 0 else offset


@dataclass
class _Slot:
    """One running record; `partition` is re-pointed when a rebalance hands the record out again."""

    partition: _Partition


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: "StepWorker", consumer: AIOKafkaConsumer) -> None:
        self._worker = worker
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)})
        self._worker._joined(self._consumer._coordinator)


class StepWorker:
    def __init__(
        self,
        settings: Settings,
        profile: BrokerProfile,
        metrics: WorkerMetrics,
        *,
        task_queue: str | None = None,
        functions: Mapping[str, FunctionDefinition] | None = None,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.metrics = metrics
        self.task_queue = task_queue or settings.task_queue
        self.names = TopicNames(settings.topic_prefix)
        self.topic = self.names.step_commands(self.task_queue)
        self._functions = functions if functions is not None else function_definitions()
        self._concurrency = settings.worker_concurrency
        self._shutdown_grace_s = shutdown_grace_s
        self._executor = ThreadPoolExecutor(self._concurrency, thread_name_prefix="agentstream-step")
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._slots: dict[tuple[TopicPartition, int], _Slot] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._crashed: BaseException | None = None
        self._completed = CompletedCommands(
            settings.worker_result_cache_entries, int(settings.worker_result_cache_mb * 2**20)
        )
        self._attempts: dict[str, asyncio.Future[None]] = {}  # command message_id -> its running attempt
        self._consumer: AIOKafkaConsumer | None = None
        self._to_commit: set[TopicPartition] = set()  # partitions whose finished steps wait for a commit
        self._committer: asyncio.Task[None] | None = None
        self._member: PreviousMember | None = None  # notes this worker's group member (membership.py)
        self.started = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        bootstrap = self.settings.kafka_bootstrap
        security = kafka_options(self.settings)
        group_id = f"{self.settings.app_id}-worker-{self.task_queue}"
        if self.settings.instance_id is None:  # static members get their place back from Kafka itself
            self._member = PreviousMember(worker_member_file(group_id), group_id)
            left_behind = self._member.left_behind()
            if left_behind is not None:  # a worker killed here: its member would hold up the join
                await leave_for(left_behind, bootstrap, group_id, security, only_if_alone=self.profile.embedded)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._concurrency,
            group_instance_id=self.settings.instance_id,  # static membership: a restart keeps its partitions
            **self.profile.consumer_options(),
            **security,
        )
        consumer.subscribe([self.topic], listener=_Rebalance(self, consumer))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **self.profile.producer_options(), **security)
        try:
            await producer.start()
            await consumer.start()
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            await consumer.stop()
            await producer.stop()
            raise await connection_failed(bootstrap, security, exc) from exc
        self._consumer = consumer
        self.started.set()
        log.info("worker started", extra={"topic": self.topic, "functions": sorted(self._functions),
                                          "concurrency": self._concurrency})
        try:
            await self._loop(consumer, producer, stop)
        finally:
            try:
                await self._drain()
                if self._committer is not None:
                    await self._committer
                await self._commit(consumer)
            finally:
                self._consumer = None
                await consumer.stop()
                await producer.stop()
                self._executor.shutdown(wait=False, cancel_futures=True)

    async def _loop(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        """Fetch into free slots, start a task per record, commit what is safe; until `stop`."""
        stopping = asyncio.ensure_future(stop.wait())
        last_poll = last_commit = time.monotonic()
        try:
            while not stop.is_set():
                if self._crashed is not None:
                    raise self._crashed
                free = self._concurrency - len(self._running)
                batches: dict[TopicPartition, list[ConsumerRecord]] = {}
                if free > 0:
                    if paused := consumer.paused():
                        consumer.resume(*paused)
                    batches = await consumer.getmany(timeout_ms=int(POLL_S * 1000), max_records=free)
                    last_poll = time.monotonic()
                elif time.monotonic() - last_poll >= KEEPALIVE_POLL_S:
                    # No free slot, but a consumer that stops polling is dropped from its group:
                    # poll with every partition paused, so nothing new is handed out.
                    consumer.pause(*consumer.assignment())
                    batches = await consumer.getmany(timeout_ms=0)
                    last_poll = time.monotonic()
                else:
                    await asyncio.wait({*self._running, stopping}, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
                # Records handed out despite the pause (a rebalance in between) run too: a
                # record taken from the consumer must be run, or its offset never passes.
                for tp, records in batches.items():
                    for record in records:
                        self._start(tp, record, producer)
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    await self._commit(consumer)
                    last_commit = time.monotonic()
        finally:
            stopping.cancel()

    def _start(self, tp: TopicPartition, record: ConsumerRecord, producer: AIOKafkaProducer) -> None:
        partition = self._partitions.setdefault(tp, _Partition())
        partition.fetched(record.offset)
        if (slot := self._slots.get((tp, record.offset))) is not None:
            # A rebalance gave this partition back and the record is handed out again while
            # its step still runs here: adopt the running step instead of running it twice.
            slot.partition = partition
            return
        slot = self._slots[(tp, record.offset)] = _Slot(partition)
        task = asyncio.create_task(self._process(tp, record, slot, producer))
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None and self._crashed is None:
            self._crashed = exc  # the loop raises it: failing loudly beats stalling a partition

    async def _drain(self) -> None:
        """Let running steps finish for the grace period, then cancel the rest (left uncommitted)."""
        if not self._running:
            return
        log.info("worker stopping", extra={"running": len(self._running), "grace_s": self._shutdown_grace_s})
        _, late = await asyncio.wait(set(self._running), timeout=self._shutdown_grace_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("cancelled steps at shutdown; they will run again", extra={"cancelled": len(late)})
            await asyncio.wait(late)

    async def _commit(self, consumer: AIOKafkaConsumer, only: set[TopicPartition] | None = None) -> None:
        """Commit the safe offset of every partition (or of `only`) that moved since its last commit."""
        offsets = {
            tp: offset
            for tp, partition in self._partitions.items()
            if (only is None or tp in only) and (offset := partition.safe_offset()) is not None
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (rebalance): these partitions may belong to another worker,
            # which resumes from the last offsets committed; some steps run again.
            log.warning("offset commit rejected after a rebalance", extra={"error": str(exc)})
            return
        except KafkaError as exc:
            log.warning("offset commit failed; retrying later", extra={"error": repr(exc)})
            return
        for tp, offset in offsets.items():
            if (partition := self._partitions.get(tp)) is not None:
                partition.committed = max(partition.committed or 0, offset)

    def _joined(self, coordinator: Any) -> None:
        if self._member is not None:
            self._member.remember(coordinator.member_id)

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        """Before giving partitions up: commit what is safe, then stop tracking them.

        Steps of revoked partitions still running finish and publish their result (a
        duplicate if the new owner runs them too; the first one counts), but this
        worker never commits their offsets: the partition belongs to the new owner.
        If the partition comes back to this worker, `_start` adopts them instead.
        """
        consumer = self._consumer
        if consumer is not None and revoked:
            await self._commit(consumer, only=set(revoked))
        for tp in revoked:
            self._partitions.pop(tp, None)
        if revoked:
            log.info("partitions revoked", extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in revoked)})

    async def _process(
        self, tp: TopicPartition, record: ConsumerRecord, slot: _Slot, producer: AIOKafkaProducer
    ) -> None:
        """Run one record and publish its outcome; its offset becomes committable once acknowledged."""
        try:
            await self._handle(record, producer)
            # Not reached when cancelled (shutdown) or failed: the offset stays pending, uncommitted.
            slot.partition.pending.discard(record.offset)
        finally:
            self._slots.pop((tp, record.offset), None)
        # Commit at once rather than at the next interval: a worker killed after a step finished
        # but before its offset was committed runs that step again (a model call paid twice).
        if self._consumer is not None and self._partitions.get(tp) is slot.partition:
            self._commit_soon(tp)

    def _commit_soon(self, tp: TopicPartition) -> None:
        """Commit `tp` as soon as the commit in flight (if any) is done, together with every other
        partition asked for meanwhile. Commits are one at a time (aiokafka holds a lock), and one
        per finished step, each awaited by its step's task, bound a worker on Apache Kafka to one
        commit round trip per step (~145 steps/s, the speed issue's W2b) whatever its concurrency."""
        self._to_commit.add(tp)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit_asked())
            self._committer.add_done_callback(self._committed)

    def _committed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None and self._crashed is None:
            self._crashed = exc  # as for a step's task: the loop raises it

    async def _commit_asked(self) -> None:
        while self._to_commit and self._consumer is not None:
            asked, self._to_commit = self._to_commit, set()
            await self._commit(self._consumer, only=asked)

    async def _handle(self, record: ConsumerRecord, producer: AIOKafkaProducer) -> None:
        try:
            command = decode_step_command(record.value)
        except InvalidMessageError as exc:
            letter = DeadLetter.of(
                reason_code=exc.code,
                reason=str(exc),
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                value=record.value,
                rejected_by=f"worker:{self.task_queue}",
            )
            await self._publish(producer, self.names.dead_letters, record.key, letter.to_bytes())
            self.metrics.dead_letters.labels(exc.code).inc()
        else:
            attributes = {"agentstream.agent_id": command.agent_id, "agentstream.step_id": command.step_id,
                          "agentstream.function": command.function, "agentstream.attempt": command.attempt}
            with tracing.consumed(f"step {command.function}", record.headers, attributes):  # the turn's child
                await self._run_step(command, producer)

    async def _run_step(self, command: StepCommand, producer: AIOKafkaProducer) -> None:
        """Run `command` unless this worker already did or does: then republish its result, or join it."""
        if (published := self._completed.get(command.message_id)) is not None:
            # Completed here before: the processor may have lost the result, so send it again.
            self.metrics.duplicate_commands.labels("republished").inc()
            log.info("command seen again; its result is sent again", extra={"step_id": command.step_id})
            await self._publish(producer, self.names.step_results, published.key, published.value)
            return
        if (running := self._attempts.get(command.message_id)) is not None:
            # Running here now: this copy is done when that attempt's result is acknowledged.
            # If that attempt is cancelled (shutdown), so is this copy: both stay uncommitted.
            self.metrics.duplicate_commands.labels("joined").inc()
            log.info("command seen again while it runs; not started twice", extra={"step_id": command.step_id})
            await asyncio.shield(running)
            return
        running = self._attempts[command.message_id] = asyncio.get_running_loop().create_future()
        try:
            published = await self._attempt(command, producer)
            self._completed.put(command.message_id, published.key, published.value)
            running.set_result(None)
        except BaseException:
            running.cancel()
            raise
        finally:
            del self._attempts[command.message_id]

    async def _attempt(self, command: StepCommand, producer: AIOKafkaProducer) -> Published:
        """Run one attempt, publish its result and wait for the acknowledgement; the record as published."""
        count_beat = self.metrics.heartbeats.labels(command.function).inc

        trace = tracing.headers() or None  # progress records continue the attempt's trace too

        async def send_progress(record: StepProgress) -> asyncio.Future[Any]:
            delivery: asyncio.Future[Any] = await producer.send(
                self.names.step_results, key=record.key, value=record.to_bytes(), headers=trace
            )
            return delivery

        progress = AttemptProgress(command, send_progress)

        def beat() -> None:  # called from the step's thread for a sync function
            count_beat()
            progress.heartbeat()

        stream = StreamWriter(producer, self.names)  # one per attempt: its flush waits for its own events

        async def emit(type: str, data: Any) -> None:
            try:
                await stream.emit(command.agent_id, command.run_id, command.step_id, command.attempt,
                                  type, data)  # type: ignore[arg-type]  # StreamEvent validates the type
            except KafkaError as exc:  # live output is progress, not the record: the step goes on
                log.warning("could not put an event on agent-stream", extra={"step_id": command.step_id,
                                                                             "error": repr(exc)})

        self.metrics.in_flight.inc()
        try:
            with tool_span(command):
                result = await execute(
                    command, self._functions, self._executor,
                    on_heartbeat=beat, on_start=progress.started if needs_started(command) else None, emit=emit,
                )
            try:
                await stream.flush()  # the stream never lags behind the result it leads to
            except KafkaError as exc:
                log.warning("agent-stream events of a step were not acknowledged",
                            extra={"step_id": command.step_id, "error": repr(exc)})
        finally:
            progress.close()
            self.metrics.in_flight.dec()
        self.metrics.steps.labels(command.function, outcome_label(result)).inc()
        self.metrics.step_seconds.labels(command.function).observe(result.duration_s)
        observe_llm_call(self.metrics, command, result)
        if result.error is not None and not result.error.retryable:
            log.info("step failed", extra={"function": command.function, "step_id": command.step_id,
                                           "error_type": result.error.type})
        await progress.flushed()  # the result follows the attempt's progress records on the partition
        value = result.to_bytes()
        try:  # with `trace`: the turn that applies the result continues this attempt's trace
            await self._publish(producer, self.names.step_results, result.key, value, trace)
        except KafkaError as exc:
            # Typically an output too large for the broker: report the attempt as failed
            # (same message ID) rather than re-running it forever.
            log.error("could not publish a step result", extra={"step_id": command.step_id, "error": repr(exc)})
            failed = StepResult(
                **result.model_dump(exclude={"ok", "output", "error"}),
                ok=False,
                error=StepError(type="ResultNotPublished", message=f"the worker could not publish the result: {exc!r}",
                                retryable=False),
            )
            value = failed.to_bytes()
            await self._publish(producer, self.names.step_results, failed.key, value, trace)
        return Published(result.key, value)

    async def _publish(self, producer: AIOKafkaProducer, topic: str, key: bytes | None, value: bytes,
                       headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send and wait for the broker's acknowledgement; retry transient errors until it comes."""
        delay = 0.5
        while True:
            try:
                delivery = await producer.send(topic, key=key, value=value, headers=headers or None)
                await delivery
                return
            except KafkaError as exc:
                if not (exc.retriable or isinstance(exc, KafkaTimeoutError)):
                    raise
                log.warning("publish failed; retrying", extra={"topic": topic, "error": repr(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


def tool_span(command: StepCommand) -> contextlib.AbstractContextManager[Any]:
    """A `tool <name>` span inside the attempt of an LLM agent's tool call; nothing for other steps."""
    if not command.function.startswith(TOOL_PREFIX):
        return contextlib.nullcontext()
    return tracing.span(f"tool {command.function.removeprefix(TOOL_PREFIX)}",
                        {"agentstream.agent_id": command.agent_id, "agentstream.step_id": command.step_id})
