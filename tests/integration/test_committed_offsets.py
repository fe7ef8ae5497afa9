"""A processor learns its partitions' committed offsets in one request and ends up where
aiokafka would have put them (streams/processor/committed_fix.py): compared here, on the
broker, with aiokafka's own `seek_to_committed` and the fetcher's follow-up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from agentstream.streams.kafka import ensure_topics, producer
from agentstream.streams.processor import committed_fix
from agentstream.topics import TopicSpec

from support import Cluster

pytestmark = pytest.mark.integration

PARTITIONS = 12
RECORDS = 8  # per partition
COMMITTED = {0: 3, 1: 0, 2: 5}  # the other partitions: nothing committed


@asynccontextmanager
async def consumer(cluster: Cluster, group: str, topic: str) -> AsyncIterator[tuple[AIOKafkaConsumer, list[int]]]:
    """A consumer of the group assigned every partition, and the sizes of the OffsetFetch requests it sends."""
    kafka = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    await kafka.start()
    asked: list[int] = []
    fetch: Callable[[Any], Any] = kafka._coordinator._do_fetch_commit_offsets

    async def counted(partitions: Any) -> Any:
        asked.append(len(partitions))
        return await fetch(partitions)

    kafka._coordinator._do_fetch_commit_offsets = counted
    kafka.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    try:
        yield kafka, asked
    finally:
        await kafka.stop()


async def a_topic_with_commits(cluster: Cluster) -> tuple[str, str]:
    topic, group = f"{cluster.prefix}committed", f"{cluster.app_id}-committed"
    await ensure_topics(cluster.bootstrap, [TopicSpec(topic, PARTITIONS)])
    async with producer(cluster.bootstrap, cluster.profile) as kafka_producer:
        for partition in range(PARTITIONS):
            for i in range(RECORDS):
                await kafka_producer.send(topic, f"{i}".encode(), partition=partition)
        await kafka_producer.flush()
    async with consumer(cluster, group, topic) as (kafka, _):
        await kafka.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "") for p, o in COMMITTED.items()})
    return topic, group


async def positions(kafka: AIOKafkaConsumer, topic: str) -> dict[int, int]:
    return {p: await kafka.position(TopicPartition(topic, p)) for p in range(PARTITIONS)}


async def test_the_committed_offsets_come_in_one_request_and_the_positions_are_aiokafkas(cluster: Cluster) -> None:
    topic, group = await a_topic_with_commits(cluster)
    async with consumer(cluster, group, topic) as (theirs, their_asks):
        expected = await theirs.seek_to_committed()
        expected_positions = await positions(theirs, topic)
    async with consumer(cluster, group, topic) as (ours, our_asks):
        got = await committed_fix.seek_all_to_committed(ours)
        got_positions = await positions(ours, topic)  # the fetcher placed the rest: it asked nothing more
    assert got == expected == {TopicPartition(topic, p): COMMITTED.get(p) for p in range(PARTITIONS)}
    assert got_positions == expected_positions == {p: COMMITTED.get(p, 0) for p in range(PARTITIONS)}
    # The seek asks once for all. The fetcher starts asking about each partition as soon as they are
    # assigned, one at a time, and stops once the seek placed them all: a question or two got out first.
    assert our_asks.count(PARTITIONS) == 1 and len(our_asks) <= 4, our_asks
    assert len(their_asks) > PARTITIONS, their_asks  # one per partition, and the fetcher's own besides


async def test_a_partition_that_has_a_position_and_no_commit_keeps_its_position(cluster: Cluster) -> None:
    # As after a restore: Faust positioned the changelog partitions itself, then seeks to the committed offsets.
    topic, group = await a_topic_with_commits(cluster)
    found: list[dict[int, int]] = []
    for seek in (AIOKafkaConsumer.seek_to_committed, committed_fix.seek_all_to_committed):
        async with consumer(cluster, group, topic) as (kafka, _):
            kafka.seek(TopicPartition(topic, 4), 6)
            await seek(kafka)
            found.append(await positions(kafka, topic))
    assert found[0] == found[1] == {p: 6 if p == 4 else COMMITTED.get(p, 0) for p in range(PARTITIONS)}
