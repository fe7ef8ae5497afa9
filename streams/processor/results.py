"""Waiting for an agent to end without polling: `GET /agents/{id}/result?wait=S`.

A client that wants an agent's result used to poll its state (20 ms doubling to 250 ms),
which added up to half the wait to every invocation and kept the processor's event loop
busy serialising records. Now the owner of the agent holds the request until the turn
that ends the agent has been applied (or `wait` seconds pass) and answers at once. It
holds a request for an agent it does not know yet the same way: schedule-then-wait (the
common "invoke") asked before the schedule was applied, got a 404 and polled again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from agentstream.topics import AgentStatus

ENDED = frozenset({AgentStatus.COMPLETED.value, AgentStatus.FAILED.value, AgentStatus.CANCELLED.value})
MAX_WAIT_S = 30.0  # longer waits are cut to this; the client asks again


class Waiters:
    """Requests waiting for something to happen to a key (an agent, an input); `wake` answers them.
    Register before looking: what happens between the look and the wait is then not missed."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[Any]]] = {}

    @contextlib.contextmanager
    def watching(self, key: str) -> Iterator[asyncio.Future[Any]]:
        """A future that resolves with what `wake` was given (or None)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(key, set())
        waiting.add(future)
        try:
            yield future
        finally:
            waiting.discard(future)
            if not waiting:
                self._waiting.pop(key, None)

    def wake(self, key: str, value: Any = None) -> None:
        for future in self._waiting.get(key, ()):
            if not future.done():
                future.set_result(value)

    def __len__(self) -> int:
        return sum(len(futures) for futures in self._waiting.values())


class ResultWaiters(Waiters):
    """Requests waiting for agents to end, by agent ID."""

    def changed(self, agent_id: str, status: str, ending: Any = None) -> None:
        """Called with every record the processor writes, once it is durable; `ending` (the record)
        is what a waiting request gets when the agent ended: its answer, with no state read."""
        if status in ENDED:
            self.wake(agent_id, ending)
