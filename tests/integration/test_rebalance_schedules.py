"""Issue finding 6: schedules seen again by the new owner after a rebalance are not
dead-lettered as `already_running`.

The reporter's harness reused agent IDs and data dirs across runs of an in-memory broker.
A processor joining a running one with the tables of an earlier broker incarnation kept
those stale records next to the restored ones (the old persisted changelog offsets were
below the new topic's end), so schedules of agents it now owned met an old, still
"running" record of the same ID and were dead-lettered; other agents could not be read.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentstream.agents import AgentClient
from agentstream.streams.broker import BrokerProfile, EmbeddedBroker
from agentstream.streams.kafka import ensure_topics
from agentstream.streams.settings import Settings

from support import PARTITIONS, Cluster, get_json, poll

pytestmark = pytest.mark.integration


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedBroker, Cluster]]:
    """A broker of this test alone, so that it can be restarted (which loses every topic)."""
    suffix = uuid.uuid4().hex[:10]
    broker = EmbeddedBroker().start()
    cluster = Cluster(broker.bootstrap, f"t{suffix}.", f"app-{suffix}", tmp_path, BrokerProfile.embedded_broker())
    holder = [broker]
    try:
        await ensure_topics(broker.bootstrap, cluster.names.specs(PARTITIONS, task_queues=("restack",)))
        yield broker, cluster
    finally:
        for process in cluster.processes:
            process.kill()
        holder[0].stop()


def state(url: str, agent_id: str) -> Any:
    status, body = get_json(f"{url}/agents/{agent_id}", timeout=2)
    return body if status == 200 else None


def dead_letters(url: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("agentstream_dead_letters_total{"))


async def schedule_all(cluster: Cluster, url: str, agent_ids: list[str]) -> dict[str, str]:
    runs = {}
    settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=url)
    async with AgentClient(settings) as client:
        for agent_id in agent_ids:
            runs[agent_id] = await client.schedule_agent("Recorder", agent_id)
    return runs


async def test_sixty_schedules_while_a_processor_with_an_earlier_runs_state_joins(
    private: tuple[EmbeddedBroker, Cluster],
) -> None:
    broker, cluster = private
    joined = [f"joined-{i}" for i in range(60)]
    # An earlier run on this broker: the joiner's data dir holds records of the same agent IDs.
    earlier = cluster.processor("earlier", data_dir=cluster.tmp / "joiner-state").start()
    earlier.wait_ready()
    await schedule_all(cluster, earlier.url, joined)
    await poll(lambda: all(state(earlier.url, a) for a in joined), what="the earlier run's agents exist")
    earlier.stop()

    # The broker restarts (memory storage: every topic is gone) and a new run begins.
    broker.stop()
    broker.start()
    await ensure_topics(broker.bootstrap, cluster.names.specs(PARTITIONS, task_queues=("restack",)))
    first = cluster.processor("first", data_dir=cluster.tmp / "first-state").start()
    first.wait_ready()
    await schedule_all(cluster, first.url, [f"filler-{i}" for i in range(200)])  # the changelog grows past the old offsets
    joiner = [cluster.processor("joiner", data_dir=cluster.tmp / "joiner-state").start()]
    joiner[0].wait_ready(90)

    def owned(url: str) -> int:
        status, body = get_json(f"{url}/ready")
        return int(body["assigned_partitions"]) if status == 200 else 0

    await poll(lambda: owned(first.url) > 0 and owned(joiner[0].url) > 0, timeout=60, what="partitions split")
    runs = await schedule_all(cluster, first.url, joined)

    def current(url: str, agent_id: str) -> bool:
        body = state(url, agent_id)
        return bool(body) and body["run_id"] == runs[agent_id] and body["status"] == "running"

    await poll(lambda: all(current(first.url, a) and current(joiner[0].url, a) for a in joined), timeout=60,
               interval=0.5, what="all 60 agents run their new schedule, readable from both processors")
    assert dead_letters(first.url) + dead_letters(joiner[0].url) == 0
