"""Faust's commit flushes its producer buffer first; under sustained load that flush must end."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import faust
from faust.transport.producer import ProducerBuffer

from agentstream.streams.processor import commit_fix


async def test_a_flush_returns_while_the_buffer_keeps_being_refilled() -> None:
    # Before the fix the flush looped until the buffer was empty, which it never is while the
    # processor keeps producing: no offset was committed for as long as the load lasted.
    commit_fix.install()
    buffer = ProducerBuffer()
    buffer.app = faust.App("commit-fix-test", producer_threaded=False)
    sent: list[Any] = []

    async def send_pending(message: Any) -> None:
        await asyncio.sleep(0.001)  # what a produce to the broker costs, roughly
        sent.append(message)

    buffer._send_pending = send_pending  # type: ignore[method-assign]
    await buffer.start()

    async def keep_producing() -> None:
        n = 0
        while True:
            for _ in range(3):  # faster than the buffer drains
                buffer.put(n)  # type: ignore[arg-type]
                n += 1
            await asyncio.sleep(0.001)

    producing = asyncio.ensure_future(keep_producing())
    try:
        await asyncio.sleep(0.05)
        buffered = buffer.size
        assert buffered > 0
        flushing = asyncio.ensure_future(buffer.flush())
        done, _ = await asyncio.wait({flushing}, timeout=10)  # a hang guard: did it return at all?
        assert flushing in done, "the flush waited for a buffer that never runs dry"
        assert len(sent) >= buffered  # what was buffered when the flush began went out
        assert buffer.size > 0  # while more kept coming
    finally:
        producing.cancel()  # without more messages even the old flush ends
        with contextlib.suppress(asyncio.CancelledError):
            await producing
        while buffer.size:  # Faust refuses to stop a buffer with messages left
            await buffer.flush()
        await buffer.stop()
