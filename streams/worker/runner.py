"""A worker: consume step commands of one task queue, run them, publish results.

Offsets are committed only after the results of a batch are acknowledged by the
broker, so a crash re-runs steps (at least once) but never drops one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaConnectionError, KafkaError

from agentstream.agents._registry import FunctionDefinition, function_definitions
from agentstream.topics import DeadLetter, InvalidMessageError, TopicNames, decode_step_command

from ..broker.profile import BrokerProfile
from ..kafka import unreachable
from ..settings import Settings
from .execute import execute, outcome_label
from .metrics import WorkerMetrics

log = logging.getLogger("agentstream.worker")


class StepWorker:
    def __init__(
        self,
        settings: Settings,
        profile: BrokerProfile,
        metrics: WorkerMetrics,
        *,
        task_queue: str | None = None,
        functions: Mapping[str, FunctionDefinition] | None = None,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.metrics = metrics
        self.task_queue = task_queue or settings.task_queue
        self.names = TopicNames(settings.topic_prefix)
        self.topic = self.names.step_commands(self.task_queue)
        self._functions = functions if functions is not None else function_definitions()
        self._concurrency = settings.worker_concurrency
        self._executor = ThreadPoolExecutor(self._concurrency, thread_name_prefix="agentstream-step")
        self.started = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        bootstrap = self.settings.kafka_bootstrap
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=bootstrap,
            group_id=f"{self.settings.app_id}-worker-{self.task_queue}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._concurrency,
            **self.profile.consumer_options(),
        )
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **self.profile.producer_options())
        try:
            await producer.start()
            await consumer.start()
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            await consumer.stop()
            await producer.stop()
            raise unreachable(bootstrap, exc) from exc
        self.started.set()
        log.info("worker started", extra={"topic": self.topic, "functions": sorted(self._functions)})
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=self._concurrency)
                records = [r for batch in batches.values() for r in batch]
                if records:
                    await asyncio.gather(*(self._process(r, producer) for r in records))
                    await producer.flush()
                    await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _process(self, record: ConsumerRecord, producer: AIOKafkaProducer) -> None:
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
            await producer.send(self.names.dead_letters, key=record.key, value=letter.to_bytes())
            self.metrics.dead_letters.labels(exc.code).inc()
            return
        self.metrics.in_flight.inc()
        try:
            result = await execute(command, self._functions, self._executor)
        finally:
            self.metrics.in_flight.dec()
        self.metrics.steps.labels(command.function, outcome_label(result)).inc()
        self.metrics.step_seconds.labels(command.function).observe(result.duration_s)
        await producer.send(self.names.step_results, key=result.key, value=result.to_bytes())
