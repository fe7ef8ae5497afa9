"""Agent types and step functions of the side-by-side workloads W1, W2a, W2b, W3 and the memory row.

Loaded by the processors and workers of bench/workloads.py (`--app workload_agents
--app-dir bench`), written against the public authoring API only. They mirror the peer
harness's services (../shared/peers/bench/restate_app.py) so the same work is measured:

- `Keyed` (W1, W3): a long-lived agent whose `add` event updates a counter and the last
  10 payloads while `run` waits on a condition, like a Restate Virtual Object's
  exclusive handler. An event with `stall` first runs the step `stall_step`, which
  blocks while a file exists (W3 kills processor and worker while a worker is in it).
- `ThreeSteps` (W2a, W2b): `run` does 3 sequential steps of a no-op function that
  returns a small dict, and returns them, like the peers' `run3`; `ThreeLocalSteps` does
  the same with local steps (run by the processor, as the peers run theirs).
- `Idle` (memory row): scheduled and then waiting on a condition that never holds.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentstream.agents import agent, condition, function, import_functions

LAST_N = 10
STEPS = 3
STALL_ENV = "BENCH_STALL_FILE"  # while this file exists, `stall_step` blocks
MARK_ENV = "BENCH_STEP_MARK_FILE"  # `stall_step` writes this file once it is inside the step
STALL_LIMIT_S = 120.0  # a stalled step gives up blocking after this, so a broken run cannot hang forever


class Item(BaseModel):
    """One `add` event: the payload kept in `last`; `stall` makes the handler run the blocking step first."""

    payload: int | str
    stall: bool = False


with import_functions():

    @function
    async def noop_step(i: int) -> dict[str, Any]:
        """The W2 step: does nothing, so the figures are the platform's cost per step."""
        return {"step": i, "ok": True}

    @function
    async def stall_step(label: str) -> dict[str, Any]:
        """Blocks while the stall file exists, after saying (mark file) that a worker is inside it.

        Released by deleting the stall file; a retry after that returns at once.
        """
        stall, mark = os.environ.get(STALL_ENV, ""), os.environ.get(MARK_ENV, "")
        if stall and os.path.exists(stall):
            if mark:
                Path(mark).write_text(f"{os.getpid()} {label}")
            give_up = time.monotonic() + STALL_LIMIT_S
            while os.path.exists(stall) and time.monotonic() < give_up:
                await asyncio.sleep(0.01)
        return {"stalled": False, "label": label}


@agent.defn()
class Keyed:
    """Per-key durable state: a counter and the last 10 payloads (W1; W3 with `stall`)."""

    count: int
    last: list[int | str]
    end: bool

    def __init__(self) -> None:
        self.count = 0
        self.last = []
        self.end = False

    @agent.event
    async def add(self, item: Item) -> int:
        if item.stall:
            await agent.step(function=stall_step, function_input=str(item.payload))
        self.count += 1
        self.last = (self.last + [item.payload])[-LAST_N:]
        return self.count

    @agent.event
    async def finish(self) -> None:
        self.end = True

    @agent.run
    async def run(self) -> int:
        await condition(lambda: self.end)
        return self.count


@agent.defn()
class ThreeSteps:
    """One durable invocation: 3 sequential no-op steps, then return their outputs."""

    @agent.run
    async def run(self) -> dict[str, Any]:
        out = []
        for i in range(STEPS):
            out.append(await agent.step(function=noop_step, function_input=i))
        return {"steps": out}


@agent.defn()
class ThreeLocalSteps:
    """The same invocation with its steps run by the processor in the turn (`local=True`), the way
    the peers run theirs: Restate's `ctx.run` and DBOS's steps run inside the handler's process."""

    @agent.run
    async def run(self) -> dict[str, Any]:
        out = []
        for i in range(STEPS):
            out.append(await agent.step(function=noop_step, function_input=i, local=True))
        return {"steps": out}


@agent.defn()
class Idle:
    """An agent that exists and waits: what one processor pays to hold it."""

    done: bool

    def __init__(self) -> None:
        self.done = False

    @agent.event
    async def finish(self) -> None:
        self.done = True

    @agent.run
    async def run(self) -> None:
        await condition(lambda: self.done)
