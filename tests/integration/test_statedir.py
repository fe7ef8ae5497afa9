"""A processor's data dir is checked against its app, cluster and changelog before Faust starts.

State from another run (another app ID, a broker that was restarted, topics that were
recreated) used to crash Faust's table recovery with `ConsistencyError` and the processor
never became ready. Now it is set aside and rebuilt from the changelog; state of the same
app on the same topics is kept.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rocksdict
from aiokafka import AIOKafkaConsumer, TopicPartition

from agentstream.agents import AgentClient
from agentstream.streams.broker import BrokerProfile, EmbeddedBroker
from agentstream.streams.devstack import ManagedProcess
from agentstream.streams.kafka import ensure_topics
from agentstream.streams.processor.statedir import (
    KEEP_STALE,
    OFFSET_KEY,
    changelog_topic,
    local_partitions,
    persisted_offset,
    set_aside,
)
from agentstream.streams.settings import Settings

from support import PARTITIONS, Cluster, all_committed, get_json, metric, poll

pytestmark = pytest.mark.integration

SET_ASIDE = "local state set aside; it will be rebuilt from the changelog"
KEPT = "local state kept"


@dataclass
class PrivateBroker:
    """A broker of this test alone, so the test can restart it (which loses every topic)."""

    broker: EmbeddedBroker
    cluster: Cluster

    def replace(self) -> EmbeddedBroker:
        """Stop the broker and start a new one (a new cluster ID) on the same address."""
        self.broker.stop()
        self.broker = EmbeddedBroker(port=self.broker.port).start()
        return self.broker


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    suffix = uuid.uuid4().hex[:10]
    broker = EmbeddedBroker().start()
    cluster = Cluster(broker.bootstrap, f"t{suffix}.", f"app-{suffix}", tmp_path, BrokerProfile.embedded_broker())
    own = PrivateBroker(broker, cluster)
    try:
        await create_topics(cluster)
        yield own
    finally:
        for process in cluster.processes:
            process.kill()
        own.broker.stop()


async def create_topics(cluster: Cluster) -> None:
    await ensure_topics(cluster.bootstrap, cluster.names.specs(PARTITIONS, task_queues=("restack",)))


def client_for(cluster: Cluster, api_url: str) -> AgentClient:
    return AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=api_url))


def notes_of(api_url: str, agent_id: str) -> list[int] | None:
    status, body = get_json(f"{api_url}/agents/{agent_id}")
    return body["fields"]["notes"] if status == 200 else None


async def record_notes(cluster: Cluster, api_url: str, agent_ids: list[str], notes: list[int]) -> None:
    """Schedule each agent (if new) and send it `notes`; wait until every agent holds exactly them."""
    async with client_for(cluster, api_url) as client:
        for agent_id in agent_ids:
            if notes_of(api_url, agent_id) is None:
                await client.schedule_agent("Recorder", agent_id)
            for n in notes:
                await client.send_agent_event(agent_id, "note", {"n": n})


async def run_until_agents_hold(cluster: Cluster, process: ManagedProcess, agent_ids: list[str], notes: list[int],
                                expected: list[int]) -> None:
    await record_notes(cluster, process.url, agent_ids, notes)
    await poll(lambda: all(notes_of(process.url, a) == expected for a in agent_ids), timeout=60,
               what=f"{len(agent_ids)} agents hold {expected}")


def log_entries(process: ManagedProcess, msg: str) -> list[dict[str, Any]]:
    """The JSON log lines of `process` whose message is `msg`."""
    entries = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("msg") == msg:
            entries.append(entry)
    return entries


def stale_dirs(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.iterdir() if p.name.startswith("stale-"))


def table_dbs(folder: Path) -> list[Path]:
    return sorted(folder.glob("v*/tables/agents-*.db"))


def assigned_partitions(process: ManagedProcess) -> int:
    status, body = get_json(f"{process.url}/ready")
    return int(body["assigned_partitions"]) if status == 200 else 0


async def test_state_from_before_a_broker_restart_is_set_aside_and_the_processor_becomes_ready(
    private: PrivateBroker,
) -> None:
    cluster = private.cluster
    data_dir = cluster.tmp / "state"
    agents = [f"before-{i}" for i in range(8)]
    first = cluster.processor("first", data_dir=data_dir).start()
    first.wait_ready()
    await run_until_agents_hold(cluster, first, agents, [0, 1], [0, 1])
    first.stop()
    assert table_dbs(data_dir), "the first run must leave tables behind"

    # A new broker on the same address: a new cluster, every topic recreated empty.
    old_cluster_id = private.broker.cluster_id
    assert private.replace().cluster_id != old_cluster_id
    await create_topics(cluster)
    second = cluster.processor("second", data_dir=data_dir).start()
    second.wait_ready(90)
    after = [f"after-{i}" for i in range(8)]
    await run_until_agents_hold(cluster, second, after, [7], [7])
    assert all(notes_of(second.url, a) is None for a in agents), "the old broker's agents are gone with it"

    [warning] = log_entries(second, SET_ASIDE)
    assert warning["level"] == "warning"
    assert warning["data_dir"] == str(data_dir)
    assert "cluster" in warning["reason"]
    [aside] = stale_dirs(data_dir)
    assert warning["moved_to"] == str(aside)
    assert table_dbs(aside), "the old tables are kept aside, not deleted"


async def test_a_processor_joining_with_state_of_recreated_topics_becomes_ready(private: PrivateBroker) -> None:
    """Same broker (same cluster ID), its topics recreated: only the changelog offsets tell."""
    cluster = private.cluster
    data_dir = cluster.tmp / "joiner-state"
    agents = [f"old-{i}" for i in range(8)]
    first = cluster.processor("first", data_dir=data_dir).start()
    first.wait_ready()
    await run_until_agents_hold(cluster, first, agents, [0, 1, 2], [0, 1, 2])
    first.stop()

    private.broker.stop()
    private.broker.start()  # same cluster ID, memory storage: every topic is gone
    await create_topics(cluster)
    running = cluster.processor("running", data_dir=cluster.tmp / "fresh-state").start()
    running.wait_ready()
    joiner = cluster.processor("joiner", data_dir=data_dir).start()
    joiner.wait_ready(90)
    await poll(lambda: assigned_partitions(joiner) > 0 and assigned_partitions(running) > 0
               and assigned_partitions(joiner) + assigned_partitions(running) == PARTITIONS,
               timeout=60, what="the joiner took over some partitions and both are ready")
    fresh = [f"new-{i}" for i in range(8)]
    await run_until_agents_hold(cluster, running, fresh, [5], [5])
    assert all(notes_of(joiner.url, a) == [5] for a in fresh)

    [warning] = log_entries(joiner, SET_ASIDE)
    assert "changelog" in warning["reason"]
    assert log_entries(running, SET_ASIDE) == []
    assert len(stale_dirs(data_dir)) == 1


async def test_a_data_dir_of_another_app_is_set_aside(cluster: Cluster) -> None:
    data_dir = cluster.tmp / "shared-state"
    other = Cluster(cluster.bootstrap, cluster.prefix, f"{cluster.app_id}-other", cluster.tmp, cluster.profile,
                    processes=cluster.processes)  # the fixture kills them too
    previous = other.processor("other-app", data_dir=data_dir).start()
    previous.wait_ready()
    await run_until_agents_hold(other, previous, ["theirs"], [1], [1])
    previous.stop()

    ours = cluster.processor("our-app", data_dir=data_dir).start()
    ours.wait_ready(90)
    await run_until_agents_hold(cluster, ours, ["mine"], [2], [2])

    [warning] = log_entries(ours, SET_ASIDE)
    assert other.app_id in warning["reason"] and cluster.app_id in warning["reason"]
    [aside] = stale_dirs(data_dir)
    assert table_dbs(aside)
    marker = json.loads((data_dir / "agentstream-state.json").read_text())
    assert marker["app_id"] == cluster.app_id


async def test_a_restart_on_the_same_broker_keeps_the_local_state(cluster: Cluster) -> None:
    data_dir = cluster.tmp / "state"
    agents = [f"kept-{i}" for i in range(8)]
    first = cluster.processor("first", data_dir=data_dir).start()
    first.wait_ready()
    await run_until_agents_hold(cluster, first, agents, [0, 1], [0, 1])
    first.stop()
    dbs = table_dbs(data_dir)
    assert dbs

    second = cluster.processor("second", data_dir=data_dir).start()
    second.wait_ready()
    assert all(notes_of(second.url, a) == [0, 1] for a in agents)
    await run_until_agents_hold(cluster, second, agents, [2], [0, 1, 2])

    assert log_entries(second, SET_ASIDE) == []
    [kept] = log_entries(second, KEPT)
    assert kept["data_dir"] == str(data_dir)
    assert kept["partitions"] == len(dbs)
    assert stale_dirs(data_dir) == []
    assert table_dbs(data_dir) == dbs


async def test_a_processor_killed_with_writes_in_flight_leaves_a_table_the_restart_keeps(cluster: Cluster) -> None:
    """RocksDB gets a record only once the changelog has it, so a SIGKILL under load leaves no
    local record ahead of the persisted offset: the restart keeps the folder (it used to set it
    aside and rebuild every agent from the changelog) and every note is applied exactly once."""
    data_dir = cluster.tmp / "state"
    agents = [f"busy-{i}" for i in range(4)]
    notes = list(range(300))
    first = cluster.processor("first", data_dir=data_dir).start()
    first.wait_ready()
    await run_until_agents_hold(cluster, first, agents, [], [])

    async def send_notes() -> None:  # through Kafka: the sends go on while the processor is dead
        async with client_for(cluster, first.url) as client:
            for n in notes:
                for agent_id in agents:
                    await client.send_agent_event(agent_id, "note", {"n": n})

    # Killed while the notes still arrive: a processor that kept up with sends finished first
    # would leave the restart nothing to apply (a loaded CI machine did that).
    sending = asyncio.create_task(send_notes())
    await poll(lambda: metric(first.url, "agentstream_inputs_total", outcome="applied") >= 100,
               what="the processor busy with the notes")
    first.kill()
    await sending

    second = cluster.processor("second", data_dir=data_dir).start()
    second.wait_ready()
    assert log_entries(second, SET_ASIDE) == []
    assert len(log_entries(second, KEPT)) == 1
    await poll(lambda: all(notes_of(second.url, a) == notes for a in agents), timeout=60,
               what="every agent holds each note once, in order")
    assert metric(second.url, "agentstream_inputs_total", outcome="applied") > 0, "the kill came mid-stream"
    await all_committed(cluster, timeout=60, interval=0.5)


async def changelog_records(cluster: Cluster) -> dict[int, list[tuple[int, bytes, bytes]]]:
    """Every record of the agents table's changelog: (offset, key, value) by partition."""
    topic = changelog_topic(cluster.app_id)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: dict[int, list[tuple[int, bytes, bytes]]] = {tp.partition: [] for tp in tps}

        async def read_all() -> None:
            while any([await consumer.position(tp) < ends[tp] for tp in tps]):
                for tp, batch in (await consumer.getmany(timeout_ms=200)).items():
                    found[tp.partition].extend((r.offset, r.key, r.value) for r in batch)
        await asyncio.wait_for(read_all(), 30)
    finally:
        await consumer.stop()
    return found


def put_local(db_path: Path, key: bytes, value: bytes) -> None:
    """Write a partition DB by hand (the processor stopped), as a crash or a bug might have left it."""
    db = rocksdict.Rdict(str(db_path), options=rocksdict.Options(raw_mode=True))
    try:
        db[key] = value
    finally:
        db.close()


async def stopped_after_two_notes(cluster: Cluster, data_dir: Path, name: str) -> list[str]:
    """Eight agents that each hold notes 0 and 1, in `data_dir` of a processor stopped since."""
    agents = [f"{name}-{i}" for i in range(8)]
    first = cluster.processor("first", data_dir=data_dir).start()
    first.wait_ready()
    await run_until_agents_hold(cluster, first, agents, [0, 1], [0, 1])
    first.stop()
    return agents


async def test_a_table_ahead_of_its_persisted_offset_is_kept_and_its_changelog_read_again(cluster: Cluster) -> None:
    """RocksDB runs ahead of the persisted offset when a SIGKILL falls between a record's write and
    its offset's, or while the restore point holds the offset back. The check must keep such a
    table (it once set it aside: CI, 2026-12-02), and the restore reads the records again harmlessly."""
    data_dir = cluster.tmp / "state"
    agents = await stopped_after_two_notes(cluster, data_dir, "ahead")
    records = await changelog_records(cluster)
    rewound = []
    for partition, path in local_partitions(data_dir).items():
        held = persisted_offset(path)
        if held is None:  # no agent in this partition
            continue
        # The newest record before `held` whose key is written again by `held`: the local table
        # holds a later value for it than the record at the offset the check is handed.
        for offset, key, _ in reversed(records[partition]):
            if offset < held and any(o > offset and k == key for o, k, _ in records[partition] if o <= held):
                put_local(path, OFFSET_KEY, str(offset).encode())
                rewound.append(partition)
                break
    assert rewound, "some agent must be written twice in one partition"

    second = cluster.processor("second", data_dir=data_dir).start()
    second.wait_ready()
    assert log_entries(second, SET_ASIDE) == []
    assert len(log_entries(second, KEPT)) == 1
    assert all(notes_of(second.url, a) == [0, 1] for a in agents)
    await run_until_agents_hold(cluster, second, agents, [2], [0, 1, 2])


async def test_a_table_older_than_the_record_at_its_persisted_offset_is_set_aside(cluster: Cluster) -> None:
    """The other way round is not a table this changelog continues: the check sets it aside."""
    data_dir = cluster.tmp / "state"
    agents = await stopped_after_two_notes(cluster, data_dir, "behind")
    records = await changelog_records(cluster)
    partition, path = next((p, path) for p, path in sorted(local_partitions(data_dir).items())
                           if persisted_offset(path) is not None)
    held = persisted_offset(path)
    [key] = [k for o, k, _ in records[partition] if o == held]
    older = [v for o, k, v in records[partition] if k == key and o < held]
    assert older, "the agent at the persisted offset was written before"
    put_local(path, key, older[-1])

    second = cluster.processor("second", data_dir=data_dir).start()
    second.wait_ready()
    [entry] = log_entries(second, SET_ASIDE)
    assert f"partition {partition} holds another record at offset {held}" in entry["reason"]
    await run_until_agents_hold(cluster, second, agents, [2], [0, 1, 2])


async def test_a_data_dir_that_cannot_be_used_is_refused_with_the_folder_and_the_fix(cluster: Cluster) -> None:
    occupied = cluster.tmp / "not-a-folder"
    occupied.write_text("a file where the data dir should be")
    processor = cluster.processor("refused", data_dir=occupied).start()
    assert processor.process is not None
    code = await asyncio.to_thread(processor.process.wait, 60)
    assert code != 0
    log = processor.log_path.read_text()
    assert f"data dir {occupied} cannot be used" in log
    assert "AGENTSTREAM_DATA_DIR" in log
    assert occupied.read_text() == "a file where the data dir should be"


def test_only_the_newest_set_aside_folders_are_kept(tmp_path: Path) -> None:
    moved = []
    for run in range(KEEP_STALE + 2):
        (tmp_path / "v1" / "tables").mkdir(parents=True)
        (tmp_path / "v1" / "tables" / "run").write_text(str(run))
        moved.append(set_aside(tmp_path))
        assert not (tmp_path / "v1").exists()
    assert stale_dirs(tmp_path) == sorted(moved[-KEEP_STALE:])
    assert [(p / "v1" / "tables" / "run").read_text() for p in moved[-KEEP_STALE:]] == ["2", "3", "4"]
