"""`GET /agents/{id}` answers from views the owner keeps until a record changes (views.py),
and never shows one that went stale while the agent's partition was elsewhere.

A processor keeps every agent's answer once read. Its partition then moves to a second
processor, which applies more events, and comes back when that one stops: the first
processor restores those records from the changelog, where nothing but the rebalance tells
it that its kept answers are old.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.agents import AgentClient
from agentstream.streams.settings import Settings

from support import PARTITIONS, Cluster, get_json, metric, poll

pytestmark = pytest.mark.integration

AGENTS = [f"reader-{i}" for i in range(12)]  # spread over every partition


def notes(url: str, agent_id: str) -> Any:
    status, body = get_json(f"{url}/agents/{agent_id}")
    return body["fields"]["notes"] if status == 200 else None


def owned(url: str) -> int:
    status, body = get_json(f"{url}/ready")
    return int(body["assigned_partitions"]) if status == 200 else 0


async def test_an_owner_shows_what_another_processor_applied_while_its_partition_was_away(cluster: Cluster) -> None:
    first = cluster.processor("first").start()
    first.wait_ready()
    settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=first.url)
    async with AgentClient(settings) as client:
        for agent_id in AGENTS:
            await client.schedule_agent("Recorder", agent_id)
            await client.send_agent_event(agent_id, "note", {"n": 1})
        await poll(lambda: all(notes(first.url, a) == [1] for a in AGENTS), what="every agent at [1], read (and kept)")

        second = cluster.processor("second").start()
        second.wait_ready(90)
        await poll(lambda: owned(first.url) > 0 and owned(second.url) > 0, timeout=60, what="partitions split")
        for agent_id in AGENTS:
            await client.send_agent_event(agent_id, "note", {"n": 2})
        await poll(lambda: all(notes(second.url, a) == [1, 2] for a in AGENTS), what="every agent at [1, 2]")
        assert metric(second.url, "agentstream_inputs_total", source="agent-events", outcome="applied") > 0

    second.stop()
    await poll(lambda: owned(first.url) == PARTITIONS, timeout=60, what="the first processor owns every partition")
    await poll(lambda: all(notes(first.url, a) == [1, 2] for a in AGENTS), timeout=30,
               what="the first processor shows the events the second one applied")
