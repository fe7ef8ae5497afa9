"""Agents apply their inputs side by side: one lane per agent, inputs in order within it.

An input's life used to hold up the next input of every agent: it waited for its turn
on the turn thread, for its local steps, for its writes to be queued, and each of those
waits took a trip round the event loop. With HTTP reads sharing that loop (the speed
issue's W1: 32 pollers), an input took ~5 ms of waiting for ~0.6 ms of work, and one
processor applied ~190 inputs/s whatever the CPU left. Inputs of different agents do
not read or write each other's record, so nothing requires that: here an input begins
as soon as the previous input *of its agent* has been applied (its record written to the
store, which answers reads at once), while other agents' inputs go on meanwhile.

What stays ordered: an agent's inputs are applied in arrival order, and inputs are still
reported done in arrival order by the window (window.py), so committed offsets never
pass an input whose writes are still on their way. What a crash loses is what it lost
before: inputs not yet durable, which are redelivered and de-duplicated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["AgentLanes"]

Begin = Callable[[], Awaitable[tuple[str, Awaitable[None]]]]


class AgentLanes:
    """Starts each input once the previous input of the same agent (key) was applied."""

    def __init__(self) -> None:
        self._tails: dict[Any, asyncio.Future[None]] = {}  # key -> applied-future of its latest input

    def start(self, key: Any, begin: Begin) -> asyncio.Task[None]:
        """Schedule `begin` (an input's handling, returning its label and what resolves once it is
        durable) after the agent's previous input; the task resolves once this input is durable."""
        previous = self._tails.get(key)
        applied: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = applied
        applied.add_done_callback(lambda done: self._release(key, done))
        task = asyncio.ensure_future(self._run(previous, begin, applied))
        # Also when the task is cancelled before it ever ran (its `finally` never runs then).
        task.add_done_callback(lambda _: _resolve(applied))
        return task

    async def idle(self) -> None:
        """Wait until every input started so far was applied (its writes may still be on their way)."""
        while self._tails:
            await asyncio.wait(list(self._tails.values()))

    async def _run(self, previous: asyncio.Future[None] | None, begin: Begin, applied: asyncio.Future[None]) -> None:
        try:
            if previous is not None:
                await asyncio.shield(previous)  # this input's own cancellation must not cancel the one before
            _, durable = await begin()
        finally:
            _resolve(applied)
        await durable

    def _release(self, key: Any, applied: asyncio.Future[None]) -> None:
        if self._tails.get(key) is applied:
            del self._tails[key]


def _resolve(applied: asyncio.Future[None]) -> None:
    if not applied.done():
        applied.set_result(None)
