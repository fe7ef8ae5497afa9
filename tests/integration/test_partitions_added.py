"""Partitions added to the input topics of a running app: refused loudly, never applied to the wrong agents.

Agents live in the partition their ID hashes to; adding partitions moves most IDs to
another partition, where no processor holds their records (Kafka cannot move them, and
cannot take partitions away again). So a processor that sees the input topics grow stops
with an error that says so, and a processor started on such topics refuses to start,
instead of treating the moved agents' inputs as inputs for unknown agents.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from agentstream.agents import AgentClient
from agentstream.streams.settings import Settings

from support import PARTITIONS, Cluster, get_json, poll

pytestmark = pytest.mark.integration

GROWN = PARTITIONS + 2


async def add_partitions(cluster: Cluster, *topics: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(total_count=GROWN) for topic in topics})
    finally:
        await admin.close()


async def test_a_processor_stops_when_partitions_are_added_and_a_new_one_refuses_to_start(cluster: Cluster) -> None:
    if cluster.profile.embedded:
        pytest.skip("the embedded broker cannot add partitions (it has no CreatePartitions): Apache Kafka only")
    processor = cluster.processor().start()
    await asyncio.to_thread(processor.wait_ready)
    settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=processor.url)
    async with AgentClient(settings) as client:
        await client.schedule_agent("Recorder", "kept")
        await client.send_agent_event("kept", "note", {"n": 1})
    await poll(lambda: (get_json(f"{processor.url}/agents/kept")[1] or {}).get("fields", {}).get("notes") == [1],
               60, what="the note applied")

    await add_partitions(cluster, cluster.names.agent_events, cluster.names.step_results)
    assert processor.process is not None
    code = await poll(lambda: processor.process.poll() if processor.process else None, 60,  # type: ignore[union-attr]
                      what="the processor stopping after partitions were added")
    assert code != 0
    assert f"now has {GROWN} partitions" in processor.log_tail(200), processor.log_tail(60)

    again = cluster.processor("again", data_dir=cluster.tmp / "processor-state").start()
    assert again.process is not None
    code = await poll(lambda: again.process.poll() if again.process else None, 60,  # type: ignore[union-attr]
                      what="the second processor refusing to start")
    assert code != 0
    log = again.log_tail(60)
    assert f"has {GROWN} partitions" in log and f"has {PARTITIONS}" in log and "changelog" in log, log


async def test_a_processor_refuses_inputs_whose_count_differs_from_its_changelog(cluster: Cluster) -> None:
    """The startup half on every broker: a changelog stored with another partition count than the inputs."""
    from agentstream.streams.kafka import ensure_topics
    from agentstream.topics import TopicSpec

    await ensure_topics(cluster.bootstrap, [TopicSpec(f"{cluster.app_id}-agents-changelog", PARTITIONS - 2)])
    processor = cluster.processor().start()
    assert processor.process is not None
    code = await poll(lambda: processor.process.poll() if processor.process else None, 60,  # type: ignore[union-attr]
                      what="the processor refusing to start")
    assert code != 0
    log = processor.log_tail(60)
    assert f"now has {PARTITIONS} partitions" in log and f"stored with {PARTITIONS - 2}" in log, log
