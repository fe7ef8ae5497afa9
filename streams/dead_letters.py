"""Reading the dead-letters topic back: the client's `dead_letters`, the CLI's `dead-letters` and
the processor's `GET /dead-letters` (the web inspector) all read it here."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from agentstream.topics import DeadLetter

from .exceptions import ConfigurationError
from .kafka import connection_failed, partitions_now


async def read_dead_letters(
    bootstrap: str, topic: str, security: dict[str, Any], agent_id: str | None = None, *, follow: bool = False,
    last: int | None = None,
) -> AsyncGenerator[DeadLetter, None]:
    """Every dead letter on `topic` (only `agent_id`'s: the partition of its key), oldest first per
    partition; without `follow`, up to the end the topic had when reading started. With `last`,
    only the last `last` records of each partition are read (what a page shows, at a bounded cost)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **security)
    try:
        await consumer.start()
    except (KafkaError, OSError) as exc:
        await consumer.stop()
        raise await connection_failed(bootstrap, security, exc) from exc
    try:
        partitions = await partitions_now(consumer, topic)
        if not partitions:
            raise ConfigurationError(f"topic {topic} does not exist; run `agentstream topics create`")
        key = None if agent_id is None else agent_id.encode()
        chosen = range(len(partitions)) if key is None else [DefaultPartitioner()(key, partitions, partitions)]
        assigned = [TopicPartition(topic, p) for p in chosen]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        if last is not None:
            for tp in assigned:
                consumer.seek(tp, max(await consumer.position(tp), ends[tp] - last))
        while True:
            positions = [await consumer.position(tp) for tp in assigned]
            if not follow and all(position >= ends[tp] for tp, position in zip(assigned, positions)):
                return
            batches = await consumer.getmany(*assigned, timeout_ms=500)
            for records in batches.values():
                for record in records:
                    if not follow and record.offset >= ends[TopicPartition(record.topic, record.partition)]:
                        continue
                    if key is None or record.key == key:
                        yield DeadLetter.model_validate_json(record.value)
    finally:
        await consumer.stop()
