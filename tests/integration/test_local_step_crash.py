"""A local step (`agent.step(..., local=True)`) survives a SIGKILL of the processor running it.

No worker runs at all: the processor runs the step itself, inside the turn of the
`hold` event. Killed while inside the step, the turn is lost with its input, which the
restarted processor reads again: the step runs again (at least once) and its output is
applied exactly once; the note sent while the processor was down is applied too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agentstream.agents import AgentClient
from agentstream.streams.devstack import ManagedProcess
from agentstream.streams.settings import Settings

from support import Cluster, get_json, poll

pytestmark = pytest.mark.integration

APP = "localcrash"
AGENT_ID = "localcrash-1"
NOTES = 20
CYCLES = 2
STARTED, RELEASE, ATTEMPTS = "started", "release", "attempts.log"  # tests/apps/localcrash.py


def summary(url: str) -> dict[str, Any] | None:
    status, body = get_json(f"{url}/agents/{AGENT_ID}", timeout=2)
    if status != 200:
        return None
    return {"status": body["status"], "notes": body["fields"]["notes"], "results": body["fields"]["results"],
            "steps_in_flight": body["steps_in_flight"], "timers": body["timers"]}


async def settle(url: str, expected: dict[str, Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(summary, url)
        if last == expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not reached within {timeout}s\n expected {expected}\n last seen {last}")


async def test_a_local_step_runs_again_after_its_processor_is_killed_inside_it_and_counts_once(cluster: Cluster) -> None:
    data_dir = cluster.tmp / "processor-state"
    processor: ManagedProcess = cluster.processor(app=APP, data_dir=data_dir).start()
    await asyncio.to_thread(processor.wait_ready)
    settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix)
    async with AgentClient(settings) as client:
        await client.schedule_agent("LocalCrash", AGENT_ID)
        for n in range(NOTES):
            await client.send_agent_event(AGENT_ID, "note", n)
        idle = {"status": "running", "notes": NOTES, "results": [], "steps_in_flight": 0, "timers": {}}
        await settle(processor.url, idle, 60, f"{NOTES} notes applied")

        for cycle in range(1, CYCLES + 1):
            folder = cluster.tmp / f"cycle-{cycle}"
            folder.mkdir()
            await client.send_agent_event(AGENT_ID, "hold", {"folder": str(folder), "cycle": cycle})
            await poll(lambda: (folder / STARTED).exists(), timeout=30, interval=0.05,
                       what=f"cycle {cycle}: the processor runs the local step")
            processor.kill()  # SIGKILL, while the processor is inside the step
            (folder / RELEASE).touch()
            await client.send_agent_event(AGENT_ID, "note", NOTES + cycle)
            processor = cluster.processor(name=f"processor-{cycle}", app=APP, data_dir=data_dir).start()
            await asyncio.to_thread(processor.wait_ready, 90.0)

            expected = {**idle, "notes": NOTES + cycle, "results": [f"done-{c}" for c in range(1, cycle + 1)]}
            await settle(processor.url, expected, 60, f"cycle {cycle}: the local step's output applied once")
            starts = (folder / ATTEMPTS).read_text().splitlines()
            pids = {line.split()[1] for line in starts}
            assert len(starts) >= 2 and len(pids) >= 2, f"the step should have run in both processors: {starts}"
