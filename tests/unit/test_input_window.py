"""Inputs in flight are reported done in arrival order, each only once its own writes are acknowledged."""

from __future__ import annotations

import asyncio

from agentstream.streams.processor.window import InputWindow


class Report:
    def __init__(self) -> None:
        self.done: list[tuple[str, int]] = []
        self.lost: list[str] = []

    def window(self, size: int = 8) -> InputWindow[str]:
        return InputWindow(lambda p, o: self.done.append((p, o)), self.lost.append, size=size)


def gate() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


async def wait_on(future: asyncio.Future[None]) -> None:
    await future


async def test_inputs_are_done_in_order_only_after_their_writes_are_acknowledged() -> None:
    report = Report()
    window = report.window()
    first, second = gate(), gate()
    (await window.add("p0", 1)).began(wait_on(first))
    (await window.add("p0", 2)).began(wait_on(second))
    second.set_result(None)  # the later input's writes arrive first
    await asyncio.sleep(0.01)
    assert report.done == []  # its offset must not be committed past the first input
    first.set_result(None)
    await window.flushed()
    assert report.done == [("p0", 1), ("p0", 2)]
    await window.close()


async def test_flushed_also_waits_for_the_input_being_applied() -> None:
    # A rebalance waits on `flushed` before the partition moves: the input taken but not yet
    # applied must be part of it, or its writes could land after the next owner restored.
    report = Report()
    window = report.window()
    place = await window.add("p0", 7)
    flushed = asyncio.ensure_future(window.flushed())
    await asyncio.sleep(0.01)
    assert not flushed.done()
    place.began(asyncio.sleep(0))
    await asyncio.wait_for(flushed, 1)
    assert report.done == [("p0", 7)]
    await window.close()


async def test_a_full_window_makes_the_next_input_wait() -> None:
    report, writes = Report(), gate()
    window = report.window(size=2)
    for offset in (1, 2, 3):  # the drainer holds 1, the queue 2 and 3
        (await window.add("p0", offset)).began(wait_on(writes))
    blocked = asyncio.ensure_future(window.add("p0", 4))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    writes.set_result(None)
    (await asyncio.wait_for(blocked, 1)).began(asyncio.sleep(0))
    await window.flushed()
    assert [offset for _, offset in report.done] == [1, 2, 3, 4]
    await window.close()


async def test_an_input_whose_writes_failed_is_reported_lost_not_done() -> None:
    report = Report()
    window = report.window()

    async def failed() -> None:
        raise RuntimeError("the broker refused the write")

    (await window.add("p0", 1)).began(failed())
    (await window.add("p1", 1)).began(asyncio.sleep(0))
    await window.flushed()
    assert report.lost == ["p0"] and report.done == [("p1", 1)]
    await window.close()


async def test_closing_leaves_what_is_in_flight_not_done() -> None:
    report, never = Report(), gate()
    window = report.window()
    (await window.add("p0", 1)).began(wait_on(never))
    await window.add("p0", 2)  # taken, never applied
    await window.close()
    await asyncio.sleep(0.01)
    assert report.done == [] and report.lost == []
