"""The crash suite: SIGKILL processors and workers at random moments of a durable workload.

50 agents run steps, durable timers and children. The same workload first runs without
kills; then again while the processor and the worker are killed (SIGKILL) and restarted
at least 20 times. Every agent must end in exactly the state of the run without kills,
with no step result applied twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from typing import Any

import pytest

from agentstream.agents import AgentClient
from agentstream.streams.devstack import ManagedProcess
from agentstream.streams.settings import Settings

from support import Cluster, get_json, poll

pytestmark = pytest.mark.integration

APP = "shapes"
AGENTS = 50
MIN_KILLS = 20


def rounds_for(index: int) -> int:
    return 4 + index % 4  # 4..7 steps, timers after each, a child every third round


def applied_entries(rounds: int) -> int:
    return rounds + rounds // 3


def settled(url: str, agent_id: str, rounds: int) -> bool:
    """The agent did all its work and waits for `finish`."""
    status, body = get_json(f"{url}/agents/{agent_id}", timeout=2)
    return status == 200 and len(body["fields"]["applied"]) == applied_entries(rounds)


def final_state(url: str, agent_id: str) -> dict[str, Any] | None:
    status, body = get_json(f"{url}/agents/{agent_id}", timeout=2)
    if status != 200 or body["status"] != "completed":
        return None
    return {key: body[key] for key in ("status", "result", "fields", "agent_type")}


async def run_workload(
    cluster: Cluster, prefix: str, url: Any, pause_ms: int, during: Any = None
) -> dict[int, dict[str, Any]]:
    """Schedule the 50 agents, let `during` run while they work, then finish them; their final states."""
    ids = {i: f"{prefix}-{i}" for i in range(AGENTS)}
    async with AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=url())) as client:
        for i, agent_id in ids.items():
            await client.schedule_agent("Workload", agent_id, {"rounds": rounds_for(i), "pause_ms": pause_ms})
        if during is not None:
            await during(ids)
        await poll(lambda: all(settled(url(), ids[i], rounds_for(i)) for i in ids), timeout=300, interval=0.5,
                   what=f"{prefix}: every agent settled")
        for agent_id in ids.values():
            await client.send_agent_event(agent_id, "finish")
    states: dict[int, dict[str, Any] | None] = {}

    def all_final() -> bool:
        states.update({i: final_state(url(), agent_id) for i, agent_id in ids.items() if states.get(i) is None})
        return all(states.values())

    await poll(all_final, timeout=120, interval=0.5, what=f"{prefix}: every agent completed")
    return states  # type: ignore[return-value]


async def test_sigkill_processor_and_worker_at_random_moments_changes_no_outcome(cluster: Cluster) -> None:
    seed = int(os.environ.get("AGENTSTREAM_CRASH_SEED", time.time()))
    rng = random.Random(seed)
    data_dir = cluster.tmp / "processor-state"
    procs: dict[str, ManagedProcess] = {
        "processor": cluster.processor(app=APP, data_dir=data_dir).start(),
        "worker": cluster.worker(app=APP).start(),
    }
    for process in procs.values():
        await asyncio.to_thread(process.wait_ready)

    baseline = await run_workload(cluster, "calm", lambda: procs["processor"].url, 300)

    kills = {"processor": 0, "worker": 0}
    kills_in_flight = 0

    async def kill_at_random(ids: dict[int, str]) -> None:
        nonlocal kills_in_flight
        generation = 0
        while sum(kills.values()) < MIN_KILLS:
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            victim = rng.choice(["processor", "worker"])
            in_flight = not all(settled(procs["processor"].url, ids[i], rounds_for(i)) for i in ids)
            procs[victim].kill()  # SIGKILL
            kills[victim] += 1
            kills_in_flight += in_flight
            generation += 1
            if victim == "processor" and kills["processor"] % 4 == 0:
                shutil.rmtree(data_dir, ignore_errors=True)  # restore from the changelog alone
            name = f"{victim}-{generation}"
            procs[victim] = (
                cluster.processor(name=name, app=APP, data_dir=data_dir) if victim == "processor"
                else cluster.worker(name=name, app=APP)
            ).start()
            await asyncio.to_thread(procs[victim].wait_ready, 90.0)

    # Longer timers (the pause changes no state) keep the agents busy through the storm; on a real
    # broker a restart waits out a 10 s session timeout, so the storm lasts longer there.
    pause_ms = 6000 if cluster.profile.embedded else 15000
    stormy = await run_workload(cluster, "storm", lambda: procs["processor"].url, pause_ms, kill_at_random)

    total = sum(kills.values())
    print(f"\ncrash suite (seed {seed}): {total} SIGKILLs ({kills['processor']} processor, {kills['worker']} worker), "
          f"{kills_in_flight} of them while agents still had work in flight")
    assert total >= MIN_KILLS
    assert kills_in_flight >= MIN_KILLS // 2, "most kills must land while the workload runs"
    for i in range(AGENTS):
        assert stormy[i] == baseline[i], f"agent {i} differs from the run without kills"
        applied = stormy[i]["fields"]["applied"]
        assert len(applied) == len(set(applied)) == applied_entries(rounds_for(i)), applied
