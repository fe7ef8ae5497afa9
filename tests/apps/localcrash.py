"""Agents with local steps, loaded with --app localcrash (no worker runs): the local-step crash
test's `LocalCrash`, and `Doubler` for the request/response call (`execute_agent`).

Like stepcrash.py, but its `hold` handler runs the blocking step locally
(`agent.step(..., local=True)`): the processor itself is inside the step when the test
kills it. `local_slow` logs every call, so the test sees the attempt run again.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from agentstream.agents import agent, condition, function

STARTED = "started"  # written by `local_slow` once it runs: the processor is inside the step
RELEASE = "release"  # written by the test: `local_slow` returns
ATTEMPTS = "attempts.log"  # one line per call of `local_slow`


class Hold(BaseModel):
    folder: str
    cycle: int


@function
async def local_slow(hold: Hold) -> str:
    """Blocks until the test releases it; logs every call."""
    folder = Path(hold.folder)
    with open(folder / ATTEMPTS, "a") as log:
        log.write(f"start pid={os.getpid()} t={time.time():.3f}\n")
    (folder / STARTED).touch()
    while not (folder / RELEASE).exists():
        await asyncio.sleep(0.02)
    return f"done-{hold.cycle}"


@agent.defn()
class LocalCrash:
    """Counts notes; each `hold` event waits for one local step and records its output."""

    def __init__(self) -> None:
        self.notes: int = 0
        self.results: list[str] = []

    @agent.event
    async def note(self, n: int) -> int:
        self.notes += 1
        return self.notes

    @agent.event
    async def hold(self, hold: Hold) -> str:
        output: str = await agent.step(function=local_slow, function_input=hold, local=True,
                                       start_to_close_timeout=timedelta(seconds=60))
        self.results.append(output)
        return output

    @agent.run
    async def run(self) -> None:
        await condition(lambda: False)  # long-lived: only its event handlers do work


@function
async def local_double(n: int) -> int:
    return n * 2


@agent.defn()
class Doubler:
    """Returns twice its input, computed by a local step: a request/response agent."""

    @agent.run
    async def run(self, n: int) -> int:
        doubled: int = await agent.step(function=local_double, function_input=n, local=True)
        return doubled
