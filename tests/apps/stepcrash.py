"""The agent of the step-crash test (issue 7, item 1), loaded with --app stepcrash.

A long-lived agent counts `note` events; its `hold` handler awaits one step of `slow`
with a start_to_close timeout and a fast, long retry policy, the options under which a
processor killed while the step runs lost the step's result. `slow` tells the test when
a worker is inside it (a marker file) and blocks until the test releases it (another
file), so the test can kill processes at exactly that moment.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from agentstream.agents import RetryPolicy, agent, condition, function


class Hold(BaseModel):
    """One held step: the folder where it signals and is released, and which cycle it is."""

    folder: str
    cycle: int


STARTED = "started"  # written by `slow` once it runs: the worker is inside the step
RELEASE = "release"  # written by the test: `slow` returns
ATTEMPTS = "attempts.log"  # one line per call of `slow`: evidence of re-runs


@function
async def slow(hold: Hold) -> str:
    """Blocks until the test releases it; logs every call (pid, time) for the diagnosis."""
    folder = Path(hold.folder)
    with open(folder / ATTEMPTS, "a") as log:
        log.write(f"start pid={os.getpid()} t={time.time():.3f}\n")
    (folder / STARTED).touch()
    while not (folder / RELEASE).exists():
        await asyncio.sleep(0.02)
    with open(folder / ATTEMPTS, "a") as log:
        log.write(f"return pid={os.getpid()} t={time.time():.3f}\n")
    return f"done-{hold.cycle}"


@agent.defn()
class StepCrash:
    """Counts notes; each `hold` event waits for one slow step and records its output."""

    def __init__(self) -> None:
        self.notes: int = 0
        self.results: list[str] = []

    @agent.event
    async def note(self, n: int) -> int:
        self.notes += 1
        return self.notes

    @agent.event
    async def hold(self, hold: Hold) -> str:
        output: str = await agent.step(
            function=slow,
            function_input=hold,
            start_to_close_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=20), backoff_coefficient=1.0, max_attempts=3000
            ),
        )
        self.results.append(output)
        return output

    @agent.run
    async def run(self) -> None:
        await condition(lambda: False)  # long-lived: only its event handlers do work
