"""`GET /agents` and `agentstream list`: the agents of every processor, filtered, from any one of them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from agentstream.agents import AgentClient
from agentstream.streams.settings import Settings

from support import Cluster, get_json, poll

pytestmark = pytest.mark.integration

AGENTS = [f"list-{n:02d}" for n in range(12)]


def owned(url: str) -> int:
    status, body = get_json(f"{url}/ready")
    return int(body["assigned_partitions"]) if status == 200 else 0


async def test_any_processor_lists_the_agents_of_all_of_them_with_filters(cluster: Cluster) -> None:
    first, second = cluster.processor("first").start(), cluster.processor("second").start()
    await asyncio.gather(asyncio.to_thread(first.wait_ready, 90), asyncio.to_thread(second.wait_ready, 90))
    await poll(lambda: owned(first.url) > 0 and owned(second.url) > 0 and owned(first.url) + owned(second.url) == 4,
               timeout=90, what="partitions split between the two processors")
    settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=first.url)
    async with AgentClient(settings) as client:
        for agent_id in AGENTS:
            await client.schedule_agent("Recorder", agent_id, wait=60)
        for agent_id in AGENTS[:4]:
            await client.cancel_agent(agent_id, wait=60)

        listed = await client.list_agents(limit=1000)
        assert listed["processors"] == 2 and listed["unreachable"] == [] and not listed["truncated"]
        assert [(a["agent_id"], a["agent_type"], a["status"]) for a in listed["agents"]] == [
            (a, "Recorder", "cancelled" if a in AGENTS[:4] else "running") for a in AGENTS]
        local = [get_json(f"{p.url}/agents?scope=local&limit=1000")[1]["agents"] for p in (first, second)]
        assert all(local) and sorted(a["agent_id"] for part in local for a in part) == AGENTS  # each has some

        cancelled = await client.list_agents(status="cancelled")
        assert [a["agent_id"] for a in cancelled["agents"]] == AGENTS[:4]
        assert (await client.list_agents(agent_type="NoSuchType"))["agents"] == []
        page = await client.list_agents(status=["running"], prefix="list-1", limit=1)
        assert [a["agent_id"] for a in page["agents"]] == ["list-10"] and page["truncated"]
    assert get_json(f"{first.url}/agents?limit=0")[0] == 400
    for debug_page in ("/router", "/table/agents/list-01/"):  # Faust's own pages are off
        assert get_json(f"{first.url}{debug_page}")[0] == 404, debug_page

    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    shown = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "agentstream.streams.cli", "list", "--status", "cancelled"],
        env={**env, "AGENTSTREAM_API_URL": second.url}, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["AGENT", "TYPE", "STATUS", "UPDATED"]
    assert [line.split()[:3] for line in lines[1:]] == [[a, "Recorder", "cancelled"] for a in AGENTS[:4]]
    assert "4 agents from 2 processor(s)" in shown.stderr
