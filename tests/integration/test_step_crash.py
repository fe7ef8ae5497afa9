"""Issue 7, item 1: a step's result survives a SIGKILL of the processor while the step runs.

A long-lived agent has taken 100 events; then a handler awaits a step with a 5 s
start_to_close timeout and a fast retry policy. While a worker is inside the step, the
processor (or the processor and the worker) is SIGKILLed; the step is released, one
more event is sent, and what was killed restarts on the same data dir. The handler must
finish with the step's output applied exactly once, and the later event be applied.
The kill cycle repeats, because a single kill does not always hit the fault.

What it caught (at c4eb212): the step command went out before the turn's changelog
write, so recovery restored the record from before the step; the first run's result was
then consumed as "ignored" but its message ID remembered as seen, and the re-issued
step's result, which has the same deterministic ID, was dropped as a duplicate.
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

APP = "stepcrash"
AGENT_ID = "stepcrash-1"
NOTES = 100
CYCLES = 4
STARTED, RELEASE = "started", "release"  # the marker files of tests/apps/stepcrash.py
RECOVERY_S = 60.0  # after the restart: Faust startup and recovery, a retry or two, the turn


def state_of(url: str) -> dict[str, Any] | None:
    status, body = get_json(f"{url}/agents/{AGENT_ID}", timeout=2)
    return body if status == 200 else None


def summary(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the assertions look at, for a readable failure message."""
    if state is None:
        return None
    return {
        "status": state["status"],
        "notes": state["fields"]["notes"],
        "results": state["fields"]["results"],
        "steps_in_flight": state["steps_in_flight"],
        "timers": state["timers"],
        "holds_not_done": [e["payload"]["cycle"] for e in state["events"] if e["name"] == "hold" and not e["done"]],
    }


async def settle(url: str, expected: dict[str, Any], timeout: float, what: str) -> None:
    """Poll the agent's state until its summary equals `expected`; fail with the last one seen."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = summary(await asyncio.to_thread(state_of, url))
        if last == expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not reached within {timeout}s\n expected {expected}\n last seen {last}")


@pytest.mark.parametrize("victims", [("processor",), ("processor", "worker")], ids=["processor", "processor-and-worker"])
async def test_step_result_is_applied_once_after_sigkill_while_the_step_runs(
    cluster: Cluster, victims: tuple[str, ...]
) -> None:
    data_dir = cluster.tmp / "processor-state"
    procs: dict[str, ManagedProcess] = {
        "processor": cluster.processor(app=APP, data_dir=data_dir).start(),
        "worker": cluster.worker(app=APP).start(),
    }
    for process in procs.values():
        await asyncio.to_thread(process.wait_ready)

    settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix)
    async with AgentClient(settings) as client:
        await client.schedule_agent("StepCrash", AGENT_ID)
        for n in range(NOTES):
            await client.send_agent_event(AGENT_ID, "note", n)
        idle = {"status": "running", "notes": NOTES, "results": [], "steps_in_flight": 0, "timers": {},
                "holds_not_done": []}
        await settle(procs["processor"].url, idle, 60, f"{NOTES} notes applied")

        for cycle in range(1, CYCLES + 1):
            folder = cluster.tmp / f"cycle-{cycle}"
            folder.mkdir()
            await client.send_agent_event(AGENT_ID, "hold", {"folder": str(folder), "cycle": cycle})
            await poll(lambda: (folder / STARTED).exists(), timeout=30, interval=0.05,
                       what=f"cycle {cycle}: a worker runs the step")

            for victim in victims:
                procs[victim].kill()  # SIGKILL, while the worker is inside the step
            (folder / RELEASE).touch()  # the step finishes (on a surviving worker: now)
            await client.send_agent_event(AGENT_ID, "note", NOTES + cycle)
            for victim in victims:
                name = f"{victim}-{cycle}"
                procs[victim] = (
                    cluster.processor(name=name, app=APP, data_dir=data_dir) if victim == "processor"
                    else cluster.worker(name=name, app=APP)
                ).start()
            for victim in victims:
                await asyncio.to_thread(procs[victim].wait_ready, 90.0)

            expected = {**idle, "notes": NOTES + cycle, "results": [f"done-{c}" for c in range(1, cycle + 1)]}
            await settle(procs["processor"].url, expected, RECOVERY_S,
                         f"cycle {cycle} (killed {'+'.join(victims)}): the step's result applied once, the later note too")
