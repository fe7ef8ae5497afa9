"""The turn thread: work runs one at a time, the time limit counts from a work's start, and
one overrun parks only its own work (streams/engine/turn_thread.py)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agentstream.streams.engine.turn_thread import TurnThread, TurnTimedOut


async def test_many_concurrent_works_run_one_at_a_time_and_all_come_back() -> None:
    turns = TurnThread(limit_s=5.0)
    running, most = 0, 0
    guard = threading.Lock()

    def work(i: int) -> int:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.001)
        with guard:
            running -= 1
        return i * 2

    results = await asyncio.gather(*(turns.run(lambda i=i: work(i)) for i in range(200)))
    assert results == [i * 2 for i in range(200)]
    assert most == 1
    turns.close()


async def test_the_limit_counts_from_when_a_work_starts_not_from_when_it_was_queued() -> None:
    turns = TurnThread(limit_s=0.4)
    # Three works of 0.25 s each: the last one waits 0.5 s in the queue, longer than the limit.
    done = await asyncio.gather(*(turns.run(lambda i=i: (time.sleep(0.25), i)[1]) for i in range(3)))
    assert done == [0, 1, 2]
    turns.close()


async def test_an_overrun_parks_only_its_own_work_and_the_queue_moves_to_a_new_thread() -> None:
    turns = TurnThread(limit_s=0.3)
    release = threading.Event()
    threads: list[str] = []

    def blocking() -> str:
        threads.append(threading.current_thread().name)
        release.wait(10)
        return "late"

    def quick(i: int) -> int:
        threads.append(threading.current_thread().name)
        return i

    blocked = asyncio.ensure_future(turns.run(blocking))
    queued = [asyncio.ensure_future(turns.run(lambda i=i: quick(i))) for i in range(3)]
    with pytest.raises(TurnTimedOut):
        await blocked
    assert await asyncio.gather(*queued) == [0, 1, 2]
    assert threads[0] != threads[1] == threads[2] == threads[3]  # the queued ones ran on the new thread
    release.set()  # the abandoned thread ends; its late result is dropped
    assert await turns.run(lambda: "after") == "after"
    turns.close()


async def test_what_a_work_raises_is_raised_to_its_caller() -> None:
    turns = TurnThread(limit_s=5.0)

    def fails() -> None:
        raise ValueError("bad turn")

    with pytest.raises(ValueError, match="bad turn"):
        await turns.run(fails)
    assert await turns.run(lambda: 7) == 7
    turns.close()


async def test_an_overrun_whose_caller_went_away_still_frees_the_work_behind_it() -> None:
    turns = TurnThread(limit_s=0.3)
    release = threading.Event()
    blocked = asyncio.ensure_future(turns.run(lambda: release.wait(10)))
    await asyncio.sleep(0.05)  # it is running
    blocked.cancel()  # its input was cancelled (a stop, a closed window): nobody waits for it any more
    started = time.monotonic()
    assert await asyncio.wait_for(turns.run(lambda: "queued"), 5) == "queued"
    assert time.monotonic() - started < 2  # about one limit, not the blocked turn's 10 s
    release.set()
    turns.close()
