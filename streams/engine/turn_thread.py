"""The thread agents' code runs on: one at a time, each piece of work within a time limit.

Where agent code runs with `EngineConfig(turns="thread")`, or when the engine's loop is not
on the main thread (by default turns run inline on the loop and are interrupted past the
limit: inline_turns.py says why and what only this thread can stop). Agent code runs off
the event loop so that code which blocks (a `time.sleep`, a sync HTTP call in a handler)
is caught by a time limit instead of freezing the processor. The
processor now applies inputs of different agents concurrently, so several turns wait
for this thread at once; that changes what the limit must measure and what a caught
overrun costs:

- the limit counts from when a piece of work *starts* on the thread, not from when it
  was queued: a turn waiting behind others has not overrun anything;
- a thread that overran is abandoned (Python cannot stop it) and work still queued on it
  moves to a fresh thread, so one blocking agent parks itself and nobody else;
- results come back to the event loop in one wakeup per batch (the loop drains what the
  thread finished since its last wakeup), instead of one cross-thread call per turn.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["TurnThread", "TurnTimedOut"]

_names = itertools.count()


class TurnTimedOut(Exception):
    """A piece of work overran the time limit; its thread was abandoned."""


class _Work:
    __slots__ = ("fn", "future", "started", "value", "error", "timed_out")

    def __init__(self, fn: Callable[[], Any], future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.future = future  # resolved (with None) once the work finished or timed out
        self.started: float | None = None  # monotonic time it started on a thread; set once, under the lock
        self.value: Any = None
        self.error: BaseException | None = None
        self.timed_out = False


class _Runner:
    """One OS thread taking work from its own queue, until it is stopped or abandoned."""

    def __init__(self, owner: "TurnThread") -> None:
        self.queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self.abandoned = False
        self.current: _Work | None = None  # the work running on this thread now
        # A daemon: an abandoned thread still inside agent code must not hold the process open.
        self.thread = threading.Thread(target=self._run, args=(owner,), daemon=True,
                                       name=f"agentstream-turn_{next(_names)}")
        self.thread.start()

    def _run(self, owner: "TurnThread") -> None:
        while True:
            work = self.queue.get()
            if work is None:
                return
            with owner.lock:
                if self.abandoned:  # taken just as the thread was given up: the current runner does it
                    owner.runner.queue.put(work)
                    return
                work.started = time.monotonic()
                self.current = work
            try:
                work.value = work.fn()
            except BaseException as exc:  # handed to the awaiting coroutine, which raises it
                work.error = exc
            with owner.lock:
                self.current = None
            owner.finished(work)


class TurnThread:
    """Runs callables one at a time on a thread; `run` awaits one, within `limit_s` of its start."""

    def __init__(self, limit_s: float) -> None:
        self._limit_s = limit_s
        self.lock = threading.Lock()
        self._runner: _Runner | None = None  # started by the first work, like a thread pool's
        self._done: list[_Work] = []  # finished on the thread, not yet handed to their loop
        self._wakeup_on: asyncio.AbstractEventLoop | None = None  # the loop a wakeup is on its way to

    async def run(self, fn: Callable[[], Any]) -> Any:
        """The value of `fn()` run on the thread; raises what it raised, or `TurnTimedOut`."""
        work = _Work(fn, asyncio.get_running_loop().create_future())
        self.runner.queue.put(work)
        while not work.future.done():
            started = work.started
            wait = self._limit_s if started is None else started + self._limit_s - time.monotonic()
            try:
                # shield: a wait that times out must not cancel the work's future
                await asyncio.wait_for(asyncio.shield(work.future), max(wait, 0.0))
            except asyncio.TimeoutError:
                self._check_overrun()  # this work's, or the one it is queued behind
        if work.timed_out:
            raise TurnTimedOut()
        if work.error is not None:
            raise work.error
        return work.value

    def _check_overrun(self) -> None:
        """If the work running on the thread overran, give the thread up and time that work out.

        Every waiter checks, not only the overrunning work's own: its caller may be gone (a
        cancelled input), and the work queued behind it must still move on.
        """
        runner = self._runner
        running = runner.current if runner is not None else None
        if runner is None or running is None or running.started is None:
            return
        if time.monotonic() - running.started < self._limit_s:
            return
        self._abandon(runner)
        running.timed_out = True
        if not running.future.done():
            running.future.set_result(None)  # its late result, if it ever comes, is dropped

    @property
    def runner(self) -> _Runner:
        if self._runner is None:
            self._runner = _Runner(self)
        return self._runner

    def finished(self, work: _Work) -> None:
        """Called on the thread: hand `work` back, waking its loop only if no wakeup is on its way."""
        loop = work.future.get_loop()
        with self.lock:
            self._done.append(work)
            if self._wakeup_on is loop:
                return
            self._wakeup_on = loop
        try:
            loop.call_soon_threadsafe(self._deliver, loop)
        except RuntimeError:  # the loop closed: nobody awaits its work any more
            pass

    def _deliver(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:
            mine = [work for work in self._done if work.future.get_loop() is loop]
            self._done = [work for work in self._done if work.future.get_loop() is not loop]
            if self._wakeup_on is loop:
                self._wakeup_on = None
        for work in mine:
            if not work.future.done():
                work.future.set_result(None)

    def _abandon(self, runner: _Runner) -> None:
        """Give up `runner`'s thread (its work overran); work not yet started moves to a new one."""
        with self.lock:
            if runner is not self._runner:  # given up already
                return
            runner.abandoned = True
            self._runner = _Runner(self)
            while True:
                try:
                    work = runner.queue.get_nowait()
                except queue.Empty:
                    break
                if work is not None:
                    self._runner.queue.put(work)
            runner.queue.put(None)  # should the old thread ever come back, it stops

    def close(self) -> None:
        """Stop the thread once the work queued so far is done (an abandoned one is left alone)."""
        with self.lock:
            if self._runner is not None:
                self._runner.queue.put(None)
                self._runner = None
