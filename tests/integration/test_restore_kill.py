"""A processor killed while it restores its table from the changelog, then restarted on the same
data dir, must end with exactly the changelog's latest record of every agent.

Written while hunting the stale records two 500-kill chaos runs found (an owner holding an
agent's record some changelog writes old): both came after a processor that started on a
wiped or partly restored data dir was killed within seconds and restarted on what it left.
This test does exactly that, with a peer processor owning part of the partitions; it has not
reproduced the loss yet (about 27 trials: 6 without the peer, 21 with), and stays as a guard for that path.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil

import pytest

from agentstream.agents import AgentClient
from agentstream.streams.settings import Settings

from support import Cluster, get_json, poll

pytestmark = pytest.mark.integration

AGENTS, ROUNDS = 40, 50
TRIALS = int(os.environ.get("AGENTSTREAM_RESTORE_KILL_TRIALS", "3"))  # more: a longer hunt (-o timeout=...)


def notes(url: str, agent_id: str) -> list[int] | None:
    status, body = get_json(f"{url}/agents/{agent_id}")
    return body["fields"]["notes"] if status == 200 else None


async def test_a_processor_killed_while_it_restores_ends_with_every_agents_latest_record(cluster: Cluster) -> None:
    data_dir = cluster.tmp / "state"
    processor = cluster.processor(data_dir=data_dir).start()
    await asyncio.to_thread(processor.wait_ready)
    agents = [f"restore-{i}" for i in range(AGENTS)]
    settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=processor.url)
    async with AgentClient(settings) as client:
        for agent_id in agents:
            await client.schedule_agent("Recorder", agent_id)
        for n in range(ROUNDS):
            await asyncio.gather(*(client.send_agent_event(a, "note", {"n": n}) for a in agents))
    expected = list(range(ROUNDS))
    await poll(lambda: all(notes(processor.url, a) == expected for a in agents), 180, what="every note applied")
    processor.kill()

    rng = random.Random(int(os.environ.get("AGENTSTREAM_RESTORE_KILL_SEED", "7")))
    peer_dir = cluster.tmp / "peer-state"
    for trial in range(TRIALS):
        # A peer owns some partitions; the victim joins (active for some, standby for the others),
        # is killed while it restores, and restarts on what it left; then the peer dies, so the
        # survivor takes every partition over from its own table.
        peer = cluster.processor(f"peer-{trial}", data_dir=peer_dir).start()
        await asyncio.to_thread(peer.wait_ready)
        if trial % 2 == 0:
            shutil.rmtree(data_dir, ignore_errors=True)  # restore from the changelog alone, then be killed in it
        victim = cluster.processor(f"victim-{trial}", data_dir=data_dir).start()
        await asyncio.sleep(rng.uniform(2.0, 7.0))  # the fault: killed this long after its start, mid-restore
        victim.kill()
        survivor = cluster.processor(f"survivor-{trial}", data_dir=data_dir).start()
        await asyncio.to_thread(survivor.wait_ready)
        peer.kill()
        await poll(lambda: get_json(f"{survivor.url}/ready")[1].get("assigned_partitions") == 4, 120,
                   what="the survivor owning every partition")
        await asyncio.to_thread(survivor.wait_ready)
        wrong = {a: n for a in agents if (n := notes(survivor.url, a)) != expected}
        assert not wrong, f"trial {trial}: {len(wrong)} agents restored wrong, e.g. {list(wrong.items())[:3]}"
        survivor.kill()
