"""Requests waiting for an agent's end are woken by the write that ends it, and leave nothing behind."""

from __future__ import annotations

from agentstream.streams.processor.results import ResultWaiters


async def test_only_an_ended_status_wakes_the_waiters_of_that_agent() -> None:
    waiters = ResultWaiters()
    with waiters.watching("a") as a, waiters.watching("b") as b:
        waiters.changed("a", "running")
        waiters.changed("b", "completed")
        assert not a.done() and b.done()
        waiters.changed("a", "failed")
        assert a.done()
    assert len(waiters) == 0  # a finished request leaves no entry (a million agents, none waited on)


async def test_a_request_that_gives_up_leaves_no_entry() -> None:
    waiters = ResultWaiters()
    with waiters.watching("a") as a:
        assert len(waiters) == 1
    assert len(waiters) == 0 and not a.done()
    waiters.changed("a", "completed")  # nobody waits any more: nothing to wake, no error
