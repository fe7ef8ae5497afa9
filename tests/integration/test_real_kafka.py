"""What only a real Kafka broker does, checked on Apache Kafka (`AGENTSTREAM_TEST_BROKER=apache`).

- Every producer agentstream creates (client, processor's Faust producer, worker) is
  idempotent: the broker stamps a producer ID into the header of each record batch it
  accepts from one, and -1 into the others, so the batches on each topic show it.
- The processor's changelog is created compacted with the configs from settings, the
  broker really compacts it, and a processor on a wiped data dir restores an agent
  updated thousands of times exactly from what is left.
- Topics made from settings carry `min.insync.replicas` as a topic config.

On the embedded broker (no idempotence, no compaction) these tests skip.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from agentstream.agents import AgentClient
from agentstream.streams.broker import BrokerProfile
from agentstream.streams.kafka import admin_client, ensure_topics, partitions_now
from agentstream.streams.settings import Settings

from support import Cluster, get_json, poll

pytestmark = pytest.mark.integration

TOPIC_CONFIG = 1  # DescribeConfigs config_source: set on the topic itself
UNKNOWN_TOPIC = 3


@pytest.fixture(autouse=True)
def _real_broker_only(profile: BrokerProfile) -> None:
    if profile.embedded:
        pytest.skip("needs a real Kafka broker (AGENTSTREAM_TEST_BROKER=apache)")


def client_for(cluster: Cluster, api_url: str) -> AgentClient:
    return AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=api_url))


def changelog(cluster: Cluster) -> str:
    return f"{cluster.app_id}-agents-changelog"  # Faust: <app id>-<table>-changelog


async def batch_producer_ids(bootstrap: str, topic: str) -> list[int]:
    """The producer ID in the header of every record batch of `topic`; -1 marks a non-idempotent producer.

    A consumer hides batch headers, so this fetches the raw batches itself.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    ids: list[int] = []
    try:
        client = consumer._client
        for partition in await partitions_now(consumer, topic):
            tp = TopicPartition(topic, partition)
            await client.force_metadata_update()
            end = (await consumer.end_offsets([tp]))[tp]
            offset = 0
            while offset < end:
                request = FetchRequest(0, 1, 1 << 24, 0, [(topic, [(partition, offset, 1 << 24)])])
                response = await client.send(client.cluster.leader_for_partition(tp), request)
                before = offset
                for _, partitions in response.topics:
                    for _, _, _, *data in partitions:
                        records = MemoryRecords(data[-1])
                        while records.has_next():
                            batch = records.next_batch()
                            ids.append(batch.producer_id)
                            offset = batch.next_offset
                assert offset > before, f"no progress fetching {topic}#{partition} at {offset}"
    finally:
        await consumer.stop()
    return ids


async def count_records(bootstrap: str, topic: str) -> tuple[int, int]:
    """(records a consumer reads from the beginning, records ever written = sum of end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_now(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        read = 0
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=500)
            read += sum(len(records) for records in batches.values())
        return read, sum(ends.values())
    finally:
        await consumer.stop()


async def topic_configs(bootstrap: str, topic: str) -> dict[str, tuple[str, int]]:
    """name -> (value, config source) of `topic` as the broker describes it.

    A topic just created may be unknown to the broker for a moment (error 3): asked again then.
    """
    deadline = time.monotonic() + 30
    async with admin_client(bootstrap) as admin:
        while True:
            responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            (resource,) = responses[0].resources
            if resource[0] != UNKNOWN_TOPIC or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    assert resource[0] == 0, f"describe {topic}: error {resource[0]} {resource[1]}"
    return {entry[0]: (entry[1], entry[3]) for entry in resource[4]}


async def poll_async(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(1.0)


def notes_of(api_url: str, agent_id: str) -> list[int] | None:
    status, body = get_json(f"{api_url}/agents/{agent_id}")
    return body["fields"]["notes"] if status == 200 else None


async def test_every_producer_writes_idempotent_batches(cluster: Cluster) -> None:
    processor = cluster.processor(app="shapes").start()
    worker = cluster.worker(app="shapes").start()
    processor.wait_ready()
    worker.wait_ready()
    async with client_for(cluster, processor.url) as client:
        await client.schedule_agent("Greeter", "greeter-1", "ada")
        assert await client.get_agent_result("greeter-1", timeout=60) == "hello ada"

    names = cluster.names
    written_by = {
        names.agent_events: "the client",
        names.step_commands("restack"): "the processor (Faust producer)",
        names.agent_updates: "the processor (Faust producer)",
        changelog(cluster): "the processor (Faust producer)",
        names.step_results: "the worker",
    }
    for topic, producer in written_by.items():
        ids = await batch_producer_ids(cluster.bootstrap, topic)
        assert ids, f"nothing on {topic}"
        assert all(i >= 0 for i in ids), f"{producer} wrote non-idempotent batches to {topic}: producer IDs {ids}"


async def test_the_broker_compacts_the_changelog_and_an_agent_restores_exactly_from_it(cluster: Cluster) -> None:
    updates = 2000
    quick_cleaning = {"segment.ms": 200, "min.cleanable.dirty.ratio": 0.01, "max.compaction.lag.ms": 1000}
    env = {"AGENTSTREAM_CHANGELOG_TOPIC_CONFIGS": json.dumps(quick_cleaning), "AGENTSTREAM_MIN_INSYNC_REPLICAS": "1"}
    data_dir = cluster.tmp / "state"
    processor = cluster.processor(data_dir=data_dir, env=env).start()
    processor.wait_ready()

    async with client_for(cluster, processor.url) as client:
        await client.schedule_agent("Recorder", "hot")
        for n in range(updates):
            await client.send_agent_event("hot", "note", {"n": n})
    await poll(lambda: notes_of(processor.url, "hot") == list(range(updates)), timeout=180, what=f"{updates} notes applied")

    configs = await topic_configs(cluster.bootstrap, changelog(cluster))
    assert configs["cleanup.policy"] == ("compact", TOPIC_CONFIG)
    assert configs["segment.ms"] == ("200", TOPIC_CONFIG)
    assert configs["min.insync.replicas"] == ("1", TOPIC_CONFIG)

    counts: list[tuple[int, int]] = []

    async def compacted() -> bool:
        counts.append(await count_records(cluster.bootstrap, changelog(cluster)))
        kept, written = counts[-1]
        return written >= updates and kept < written // 4

    await poll_async(compacted, timeout=90, what="the broker compacted the changelog")
    kept, written = counts[-1]
    print(f"changelog: {written} records written for {updates} updates, {kept} left after compaction")

    status, before = get_json(f"{processor.url}/agents/hot")
    assert status == 200
    processor.kill()
    shutil.rmtree(data_dir)
    restarted = cluster.processor(name="restored", data_dir=data_dir, env=env).start()
    restarted.wait_ready(timeout=120)
    assert get_json(f"{restarted.url}/agents/hot") == (200, before)

    async with client_for(cluster, restarted.url) as client:
        await client.send_agent_event("hot", "note", {"n": updates})
    await poll(lambda: notes_of(restarted.url, "hot") == list(range(updates + 1)), what="the restored agent takes the next note")


async def test_topics_from_settings_carry_min_insync_replicas(broker: str, cluster: Cluster) -> None:
    settings = Settings(kafka_bootstrap=broker, topic_prefix=f"{cluster.prefix}prod.", replication_factor=1,
                        min_insync_replicas=1)
    specs = settings.topic_specs(partitions=2, task_queues=("q",))
    assert sorted(await ensure_topics(broker, specs)) == sorted(s.name for s in specs)
    for spec in specs:
        configs = await topic_configs(broker, spec.name)
        assert configs["min.insync.replicas"] == ("1", TOPIC_CONFIG), spec.name
        assert configs["cleanup.policy"] == ("delete", TOPIC_CONFIG), spec.name
