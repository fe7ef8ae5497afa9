"""What each coroutine of a live agent is suspended on, in words a person reads.

The record keeps it (`AgentRecord.waiting`), so `agentstream state` and `GET /agents/{id}`
tell an idle agent (its `run` waits on a condition nobody has satisfied yet) from one
waiting for a worker, a timer or a child, and point at the line of the agent's code.
It is computed after each turn from the live coroutines; it only reads them.
"""

from __future__ import annotations

import linecache
import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .commands import ChildCall, Command, StepCall, TimerCall
from .record import WaitKind

MAX_DETAIL = 160  # characters of a condition's source line kept


def for_command(command: Command) -> tuple[WaitKind, str]:
    """(what, detail) of a future awaiting `command`'s outcome."""
    if isinstance(command, StepCall):
        return "step", f"{command.function} (step {command.seq})"
    if isinstance(command, ChildCall):
        return "child", f"{command.agent_type} {command.agent_id}"
    if isinstance(command, TimerCall):
        return for_sleep(command.fire_at)
    return "other", type(command).__name__


def for_condition(predicate: Callable[[], Any], fire_at: float | None) -> tuple[WaitKind, str]:
    """A condition's predicate, shown by its source line (a lambda has no better name)."""
    code = getattr(predicate, "__code__", None)
    detail = getattr(predicate, "__qualname__", repr(predicate))
    if code is not None:
        line = linecache.getline(code.co_filename, code.co_firstlineno).strip()
        detail = line[:MAX_DETAIL] if line else f"{detail} at {os.path.basename(code.co_filename)}:{code.co_firstlineno}"
    if fire_at is not None:
        detail += f" (times out at {at(fire_at)})"
    return "condition", detail


def for_sleep(fire_at: float) -> tuple[WaitKind, str]:
    return "timer", f"until {at(fire_at)}"


def innermost(coro: Any, is_machinery: Callable[[str], bool]) -> str:
    """`file:line in function` of the deepest frame of the agent's own code in an await chain."""
    where = ""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        if not is_machinery(code.co_filename):
            where = f"{os.path.basename(code.co_filename)}:{frame.f_lineno} in {code.co_qualname}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return where


def at(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat()
