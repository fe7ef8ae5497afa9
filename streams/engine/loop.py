"""A deterministic asyncio event loop for one agent, driven one turn at a time.

Agent code runs as ordinary asyncio tasks on this loop, so `asyncio.create_task`,
`gather` and `asyncio.timeout` work, but nothing here touches the clock or I/O: the
loop runs ready callbacks in order until every task waits, time is the turn's time,
and timers (`call_at`) become durable timers of the agent. That makes a replay of the
same inputs take exactly the same path.
"""

from __future__ import annotations

import asyncio
import contextvars
from asyncio import events
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from agentstream.agents._context import RUNTIME_ATTRIBUTE


class TimerSource(Protocol):
    """Turns a loop timer into a durable one (the agent runtime implements it)."""

    def start_loop_timer(self, handle: asyncio.TimerHandle) -> None: ...
    def cancel_loop_timer(self, handle: asyncio.TimerHandle) -> None: ...


class AgentLoop(asyncio.AbstractEventLoop):
    def __init__(self, runtime: Any) -> None:
        setattr(self, RUNTIME_ATTRIBUTE, runtime)
        self._timers: TimerSource = runtime
        self._ready: deque[asyncio.Handle] = deque()
        self._now = 0.0
        self._running = False
        self._closed = False
        self.unhandled: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[Any]] = []

    # -- driving ---------------------------------------------------------------------

    def set_time(self, timestamp: float) -> None:
        self._now = timestamp

    def run_until_blocked(self, settle: Callable[[], bool]) -> None:
        """Run ready callbacks until none is left and `settle()` wakes nobody up.

        `settle` resolves at most one waiting condition and says whether it did, so
        conditions are checked one at a time against the latest state.
        """
        previous = events._get_running_loop()
        try:  # set inside: an interruption (inline_turns.py) just after it must still restore `previous`
            events._set_running_loop(self)
            self._running = True
            while True:
                while self._ready:
                    handle = self._ready.popleft()
                    if not handle._cancelled:
                        handle._run()
                if not settle():
                    break
        finally:
            self._running = False
            events._set_running_loop(previous)

    def fire(self, handle: asyncio.Handle) -> None:
        self._ready.append(handle)

    # -- the parts of AbstractEventLoop that asyncio's tasks and futures use -----------

    def time(self) -> float:
        return self._now

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, args, self, context)
        self._timers.start_loop_timer(handle)
        return handle

    def call_later(  # type: ignore[override]
        self, delay: float, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.TimerHandle:
        return self.call_at(self._now + delay, callback, *args, context=context)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        self._timers.cancel_loop_timer(handle)

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(  # type: ignore[override]
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None, context: contextvars.Context | None = None
    ) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=self, name=name, context=context)
        self._tasks.append(task)
        return task

    def live_tasks(self) -> list[asyncio.Task[Any]]:
        self._tasks = [task for task in self._tasks if not task.done()]
        return list(self._tasks)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.unhandled.append(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.unhandled.append(context)

    def get_exception_handler(self) -> None:
        return None

    def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> asyncio.Handle:  # type: ignore[override]
        raise RuntimeError("agent code cannot use threads; run blocking work in a step")

    def run_in_executor(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise RuntimeError("agent code cannot use executors; run blocking work in a step")
