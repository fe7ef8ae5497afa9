"""`heartbeat()`: a step function tells its worker it is still making progress."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

_beat: ContextVar[Callable[[Any], None] | None] = ContextVar("agentstream_heartbeat", default=None)


def heartbeat(details: Any = None) -> None:
    """Record progress of the running step; resets its heartbeat timeout.

    Call it from a `@function` (sync or async) that runs longer than its
    `heartbeat_timeout`. Outside a worker (e.g. calling the function in a unit test)
    it does nothing.
    """
    beat = _beat.get()
    if beat is not None:
        beat(details)
