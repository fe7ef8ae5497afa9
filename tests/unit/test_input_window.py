"""Inputs in flight are acked in arrival order, each only once its own writes are acknowledged."""

from __future__ import annotations

import asyncio

from agentstream.streams.processor.window import InputWindow


async def test_inputs_are_acked_in_order_only_after_their_writes_are_acknowledged() -> None:
    acked: list[str] = []

    async def ack(event: str) -> None:
        acked.append(event)

    window = InputWindow(ack, size=8)
    first, second = asyncio.get_running_loop().create_future(), asyncio.get_running_loop().create_future()

    async def durable(future: asyncio.Future[None]) -> None:
        await future

    await window.add("first", durable(first))
    await window.add("second", durable(second))
    second.set_result(None)  # the later input's writes arrive first
    await asyncio.sleep(0.01)
    assert acked == []  # its offset must not be committed past the first input
    first.set_result(None)
    await window.flushed()
    assert acked == ["first", "second"]
    await window.close()


async def test_a_full_window_makes_the_next_input_wait() -> None:
    gate = asyncio.get_running_loop().create_future()

    async def durable() -> None:
        await gate

    async def ack(event: int) -> None:
        pass

    window = InputWindow(ack, size=2)
    await window.add(1, durable())
    await window.add(2, durable())  # the drainer holds 1, the queue 2
    await window.add(3, durable())
    blocked = asyncio.ensure_future(window.add(4, durable()))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    gate.set_result(None)
    await asyncio.wait_for(blocked, 1)
    await window.flushed()
    await window.close()


async def test_closing_leaves_what_is_in_flight_unacked() -> None:
    acked: list[str] = []

    async def ack(event: str) -> None:
        acked.append(event)

    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def durable() -> None:
        await never

    window = InputWindow(ack)
    await window.add("in flight", durable())
    await window.close()
    await asyncio.sleep(0.01)
    assert acked == []
