"""Agents used by the integration tests (loaded by processors with --app recorder)."""

from __future__ import annotations

from pydantic import BaseModel

from agentstream.agents import RetryableError, TerminalError, agent, condition, function


class Note(BaseModel):
    n: int


@agent.defn()
class Recorder:
    """Keeps every note it is sent, in arrival order."""

    def __init__(self) -> None:
        self.notes: list[int] = []

    @agent.event
    async def note(self, note: Note) -> int:
        self.notes.append(note.n)
        return len(self.notes)

    @agent.run
    async def run(self) -> None:
        await condition(lambda: False)  # lives until cancelled: it only records notes


@function
async def double(value: int) -> int:
    return value * 2


@function
def shout(text: str) -> str:
    """A sync function: workers run it in a thread pool."""
    return text.upper()


@function
async def refuse(value: int) -> int:
    raise TerminalError(f"refusing {value}")


@function
async def flaky(value: int) -> int:
    raise RetryableError("try later", retry_after=1.5)


# --- step worker: per-record completion, heartbeats ----------------------------------------

import asyncio  # noqa: E402
from pathlib import Path  # noqa: E402

from agentstream.agents import heartbeat  # noqa: E402


@function
async def wait_for_file(path: str) -> str:
    """Blocks until `path` exists: tests hold a step open with it and release it on cue."""
    while not Path(path).exists():
        await asyncio.sleep(0.05)
    return path


@function
async def heartbeating(beats: int) -> int:
    """Runs `beats` x 0.1 s, calling heartbeat() each time: outlives a short heartbeat_timeout."""
    for _ in range(beats):
        heartbeat()
        await asyncio.sleep(0.1)
    return beats
