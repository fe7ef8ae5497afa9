"""Inputs in flight: the processor begins the next input while the broker acknowledges the last.

An input counts as done (its offset may be committed) only once its record is on the
changelog and its outputs are acknowledged, the checkpoint order of DESIGN.md. Waiting
for that before beginning the next input bound a partition to one broker round trip
per input. Instead each input's acknowledgements are awaited here, in the background,
while later inputs are applied; inputs are reported done strictly in the order they
arrived, so a committed offset never passes an input whose writes are still on their
way. A crash loses only unacknowledged inputs, which are redelivered and recognised by
de-duplication, as before.

An input takes its place in the window before it is applied, so `flushed` also waits
for the one being applied now: a rebalance waits for it before the partition moves on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger("agentstream.processor")

IN_FLIGHT = 256  # inputs applied but not yet acknowledged, at most (the next input waits beyond it)
P = TypeVar("P")  # how a partition is named (Faust's TP in the processor)


class Place:
    """An input's place in the window; `began` hands it what resolves once its writes are acknowledged."""

    def __init__(self) -> None:
        self._durable: asyncio.Future[asyncio.Future[None]] = asyncio.get_running_loop().create_future()

    def began(self, durable: Awaitable[None]) -> None:
        self._durable.set_result(asyncio.ensure_future(durable))

    async def wait(self) -> None:
        await (await self._durable)

    def cancel(self) -> None:
        if self._durable.done() and not self._durable.cancelled():
            self._durable.result().cancel()
        self._durable.cancel()


class InputWindow(Generic[P]):
    """Reports inputs done in arrival order, each once its writes are acknowledged."""

    def __init__(self, done: Callable[[P, int], None], lost: Callable[[P], None], size: int = IN_FLIGHT) -> None:
        self._done, self._lost = done, lost
        self._queue: asyncio.Queue[tuple[P, int, Place]] = asyncio.Queue(size)
        self._drainer: asyncio.Task[None] | None = None

    async def add(self, partition: P, offset: int) -> Place:
        """Take the next place for the input at `offset`; waits while the window is full."""
        if self._drainer is None:
            self._drainer = asyncio.ensure_future(self._drain())
        place = Place()
        await self._queue.put((partition, offset, place))
        return place

    async def flushed(self) -> None:
        """Wait until every input that took a place so far is done (or reported lost)."""
        await self._queue.join()

    async def close(self) -> None:
        """Stop; what is still in flight is never reported done (it is redelivered to the partition's next owner)."""
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None
        while not self._queue.empty():
            _, _, place = self._queue.get_nowait()
            place.cancel()
            self._queue.task_done()

    async def _drain(self) -> None:
        while True:
            partition, offset, place = await self._queue.get()
            try:
                await place.wait()
            except asyncio.CancelledError:
                place.cancel()
                raise
            except Exception:  # never committed: the partition's commits stop before it, and it is redelivered
                log.exception("an input's writes were not acknowledged; its offset is not committed")
                self._lost(partition)
            else:
                self._done(partition, offset)
            finally:
                self._queue.task_done()
