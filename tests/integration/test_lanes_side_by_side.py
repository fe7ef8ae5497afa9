"""Agents apply their inputs side by side (streams/processor/lanes.py): while one agent's
turn waits on a long local step, other agents' inputs are applied; the waiting agent's
own later inputs wait for it and are applied after it, in order.

The processor used to apply one input at a time, so one slow local step held every agent
of the processor.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentstream.agents import AgentClient
from agentstream.streams.settings import Settings

from support import Cluster, get_json, poll

pytestmark = pytest.mark.integration

APP = "localcrash"
STARTED, RELEASE = "started", "release"  # tests/apps/localcrash.py


def fields(url: str, agent_id: str) -> dict[str, Any] | None:
    status, body = get_json(f"{url}/agents/{agent_id}", timeout=2)
    return body["fields"] if status == 200 else None


async def test_other_agents_go_on_while_one_waits_on_a_local_step_and_its_own_inputs_wait_in_order(
    cluster: Cluster,
) -> None:
    processor = cluster.processor(app=APP, data_dir=cluster.tmp / "processor-state").start()
    await asyncio.to_thread(processor.wait_ready)
    folder = cluster.tmp / "hold"
    folder.mkdir()
    slow, others = "lanes-slow", [f"lanes-other-{i}" for i in range(4)]
    async with AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix)) as client:
        for agent_id in (slow, *others):
            await client.schedule_agent("LocalCrash", agent_id)
        await client.send_agent_event(slow, "hold", {"folder": str(folder), "cycle": 1})
        await poll(lambda: (folder / STARTED).exists(), timeout=30, interval=0.05,
                   what="the processor runs the slow agent's local step")
        await client.send_agent_event(slow, "note", 1)  # behind the hold, in the slow agent's own lane
        for agent_id in others:
            for n in range(3):
                await client.send_agent_event(agent_id, "note", n)

        def others_done() -> bool:
            seen = [fields(processor.url, agent_id) for agent_id in others]
            return all(f is not None and f["notes"] == 3 for f in seen)

        await poll(others_done, timeout=30, interval=0.1, what="the other agents' notes applied during the step")
        assert not (folder / RELEASE).exists()
        held = fields(processor.url, slow)
        assert held is not None and held["notes"] == 0 and held["results"] == [], held  # still inside its step

        (folder / RELEASE).touch()

        def slow_done() -> bool:
            seen = fields(processor.url, slow)
            return seen is not None and seen["notes"] == 1 and seen["results"] == ["done-1"]

        await poll(slow_done, timeout=30, interval=0.1, what="the slow agent's step, then its note, applied")
