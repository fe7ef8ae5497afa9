"""Inputs in flight: the processor begins the next input while the broker acknowledges the last.

An input counts as done (Faust may commit its offset) only once its record is on the
changelog and its outputs are acknowledged, the checkpoint order of DESIGN.md. Waiting
for that before beginning the next input bound a partition to one broker round trip
per input. Instead each input's acknowledgements are awaited here, in the background,
while later inputs are applied; inputs are acked strictly in the order they arrived, so
a committed offset never passes an input whose writes are still on their way. A crash
loses only unacknowledged inputs, which are redelivered and recognised by
de-duplication, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("agentstream.processor")

IN_FLIGHT = 256  # inputs applied but not yet acknowledged, at most (the next input waits beyond it)


class InputWindow:
    """Acks inputs in arrival order once each one's writes are acknowledged."""

    def __init__(self, ack: Callable[[Any], Awaitable[Any]], size: int = IN_FLIGHT) -> None:
        self._ack = ack
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[None]]] = asyncio.Queue(size)
        self._drainer: asyncio.Task[None] | None = None

    async def add(self, event: Any, durable: Awaitable[None]) -> None:
        """Track `event` until `durable` resolves; waits while the window is full."""
        if self._drainer is None:
            self._drainer = asyncio.ensure_future(self._drain())
        await self._queue.put((event, asyncio.ensure_future(durable)))

    async def flushed(self) -> None:
        """Wait until every input added so far is acked."""
        await self._queue.join()

    async def close(self) -> None:
        """Stop acking; what is still in flight stays unacked (and is redelivered to the partition's next owner)."""
        if self._drainer is not None:
            self._drainer.cancel()
        while not self._queue.empty():
            _, durable = self._queue.get_nowait()
            durable.cancel()
            self._queue.task_done()

    async def _drain(self) -> None:
        while True:
            event, durable = await self._queue.get()
            try:
                await durable
                await self._ack(event)
            except asyncio.CancelledError:
                durable.cancel()
                raise
            except Exception:  # never acked: the commit stops before it, and it is redelivered after a restart
                log.exception("an input's writes were not acknowledged; its offset is not committed")
            finally:
                self._queue.task_done()
