"""The processor commits every input it handled, including those it had to read again itself.

When the consumer skips inputs (a fetch answered for an old position after a seek; see
positions.py), the processor reads them directly and handles them first. Faust never
saw those inputs, so with its own commit bookkeeping the partition's commit stayed at
the first skipped one for good: nothing was lost, but the lag grew and every restart
re-read everything since. The skip is reproduced by `tests/apps/skipping.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from agentstream.agents import AgentClient
from agentstream.streams.settings import Settings

from support import PARTITIONS, Cluster, all_committed, get_json, metric, poll
from test_statedir import log_entries

pytestmark = pytest.mark.integration

AGENTS = [f"skipped-{i}" for i in range(6)]  # spread over the partitions


def notes_of(api_url: str, agent_id: str) -> list[int] | None:
    status, body = get_json(f"{api_url}/agents/{agent_id}")
    return body["fields"]["notes"] if status == 200 else None


async def send_notes(cluster: Cluster, notes: range, schedule: bool = False) -> None:
    settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix)
    async with AgentClient(settings) as client:
        for agent_id in AGENTS:
            if schedule:
                await client.schedule_agent("Recorder", agent_id)
            for n in notes:
                await client.send_agent_event(agent_id, "note", {"n": n})


async def first_run(cluster: Cluster) -> Path:
    """A processor applies notes 0-4 to every agent, commits them all and stops; returns its data dir."""
    data_dir = cluster.tmp / "state"
    first = cluster.processor("first", data_dir=data_dir).start()
    first.wait_ready()
    await send_notes(cluster, range(5), schedule=True)
    await poll(lambda: all(notes_of(first.url, a) == list(range(5)) for a in AGENTS), what="the first notes applied")
    await all_committed(cluster, timeout=30)
    first.stop()
    return data_dir


async def test_inputs_the_consumer_skipped_are_handled_and_committed(cluster: Cluster) -> None:
    data_dir = await first_run(cluster)

    await send_notes(cluster, range(5, 15))  # while no processor runs: the next one starts at the commit
    second = cluster.processor("second", data_dir=data_dir, app="skipping", env={"AGENTSTREAM_TEST_SKIP": "4"}).start()
    second.wait_ready()
    await poll(lambda: all(notes_of(second.url, a) == list(range(15)) for a in AGENTS), timeout=60,
               what="every note applied once, in order")
    assert metric(second.url, "agentstream_input_rewinds_total") > 0, "the consumer skipped inputs"
    await all_committed(cluster, timeout=30)


async def test_inputs_skipped_before_the_records_position_are_read_again_from_the_commit(cluster: Cluster) -> None:
    """The records say where the latest applied input of a partition was; an input of another agent before
    it may have been lost with a crash (the commit stops there). Skips after the commit are caught too."""
    data_dir = await first_run(cluster)
    ends = {f"{cluster.names.agent_events}#{p}": n for p, n in (await end_offsets(cluster)).items() if n >= 3}

    # The commit 3 behind the records (as if the input there was lost), and 2 inputs after it skipped.
    env = {"AGENTSTREAM_TEST_COMMIT_BEHIND": "3", "AGENTSTREAM_TEST_SKIP": "2"}
    second = cluster.processor("second", data_dir=data_dir, app="skipping", env=env).start()
    second.wait_ready()
    read_again = "inputs skipped by the consumer are read again"
    await poll(lambda: {entry["source"] for entry in log_entries(second, read_again)} == set(ends), timeout=30,
               what="every partition's skipped inputs read again")
    for entry in log_entries(second, read_again):  # from the commit, not from the records' position
        assert (entry["from"], entry["to"]) == (ends[entry["source"]] - 3, ends[entry["source"]] - 1), entry
    assert all(notes_of(second.url, a) == list(range(5)) for a in AGENTS), "inputs read twice are recognised"
    await all_committed(cluster, timeout=30)


async def end_offsets(cluster: Cluster) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(cluster.names.agent_events, p) for p in range(PARTITIONS)]
        return {tp.partition: end for tp, end in (await consumer.end_offsets(partitions)).items()}
    finally:
        await consumer.stop()
