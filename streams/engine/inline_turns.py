"""Turns run on the event loop's own thread, within a time limit that a watchdog enforces.

The turn thread (turn_thread.py) keeps code that blocks off the event loop, but every
turn crossed threads twice, and the two threads took the GIL from each other on every
crossing. With local steps an invocation is four turns, and those crossings cost W2b a
sixth of its throughput on two cores: the GIL was handed to a thread the OS had not
scheduled yet, and the processor idled. So on the main thread a turn now runs where it
is awaited, and the limit is kept by interrupting it instead:

- a watchdog thread looks every `limit / 10` (10-250 ms) at the turn running now, and
  once it has run longer than its limit, sends the main thread a real-time signal;
- the signal's handler raises `TurnOverrun` in the agent's code. It derives from
  `BaseException`, so an `except Exception` in that code does not swallow it; it ends a
  `time.sleep`, a blocking socket read or a lock wait (Python retries those on EINTR
  only when the handler does not raise);
- whatever became of that exception (an asyncio task of the agent keeps it as its
  result), the turn's outcome is thrown away and its caller gets `TurnTimedOut`, as
  from the turn thread. The signal is sent again at every check while the turn has not
  returned, so code that catches it and blocks again is interrupted again.

What it cannot stop: code that swallows every interruption and keeps blocking, or a C
extension that never returns to the interpreter, stalls the processor, where the turn
thread would have abandoned its thread. `EngineConfig(turns="thread")` (the processor's
`AGENTSTREAM_TURN_ISOLATION=thread`) keeps the thread for such code; so does a loop not on
the main thread, where no signal handler can run.
"""

from __future__ import annotations

import signal
import threading
import time
from asyncio import events
from collections.abc import Callable
from typing import Any

from .turn_thread import TurnTimedOut

__all__ = ["InlineTurns", "TurnOverrun", "inline_available"]

# A real-time signal: SIGALRM belongs to pytest-timeout and Faust's blocking detector.
_SIGNAL = signal.SIGRTMIN + 5 if hasattr(signal, "SIGRTMIN") else None
_MIN_CHECK_S, _MAX_CHECK_S = 0.01, 0.25


class TurnOverrun(BaseException):
    """Raised in agent code that ran past the turn's limit (a BaseException: `except Exception` lets it pass)."""


def inline_available() -> bool:
    """Whether a turn can run inline here: on the main thread, where a signal handler runs."""
    return (
        _SIGNAL is not None
        and hasattr(signal, "pthread_kill")
        and threading.current_thread() is threading.main_thread()
    )


class _Watchdog:
    """The main thread's one watchdog: what runs now, since when, and the thread that signals it."""

    def __init__(self) -> None:
        assert _SIGNAL is not None
        self.active = False  # a turn is running on the main thread
        self.started = 0.0  # monotonic time it started
        self.limit = 1.0  # its limit, s
        self.overran = False  # the handler interrupted it
        self._main = threading.main_thread().ident
        signal.signal(_SIGNAL, self._on_signal)
        threading.Thread(target=self._watch, daemon=True, name="agentstream-turn-watchdog").start()

    def _overdue(self) -> bool:
        return self.active and time.monotonic() - self.started >= self.limit

    def _on_signal(self, signum: int, frame: object) -> None:
        # Checked again here, on the main thread: the turn the watchdog saw may have ended since.
        if self._overdue():
            self.overran = True
            raise TurnOverrun()

    def _watch(self) -> None:
        while True:
            time.sleep(min(max(self.limit / 10, _MIN_CHECK_S), _MAX_CHECK_S))
            if self._overdue():
                assert _SIGNAL is not None and self._main is not None
                signal.pthread_kill(self._main, _SIGNAL)


_watchdog: _Watchdog | None = None


class InlineTurns:
    """Runs callables on the calling (main) thread; `call` returns `fn()` or raises `TurnTimedOut`
    once `fn` ran past `limit_s`."""

    def __init__(self, limit_s: float) -> None:
        self._limit_s = limit_s

    def call(self, fn: Callable[[], Any]) -> Any:
        global _watchdog
        if _watchdog is None:
            _watchdog = _Watchdog()
        watch = _watchdog
        running = events._get_running_loop()
        watch.limit, watch.started, watch.overran = self._limit_s, time.monotonic(), False
        watch.active = True
        try:
            try:
                value = fn()
            finally:
                watch.active = False  # a plain store: no point where the handler could run before it
                # An interruption may land anywhere in the turn, also where an agent's loop had just
                # made itself the running one (loop.py): this thread's event loop is restored for sure.
                events._set_running_loop(running)
        except TurnOverrun:
            raise TurnTimedOut() from None
        except BaseException:
            if watch.overran:  # interrupted, and the agent's code raised something else in its place
                raise TurnTimedOut() from None
            raise
        if watch.overran:  # interrupted, and the agent's code went on (an asyncio task kept the exception)
            raise TurnTimedOut()
        return value
