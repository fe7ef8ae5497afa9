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

from agentstream.topics import AgentStatus

ENDED = frozenset({AgentStatus.COMPLETED.value, AgentStatus.FAILED.value, AgentStatus.CANCELLED.value})
MAX_WAIT_S = 30.0  # longer waits are cut to this; the client asks again


class ResultWaiters:
    """Requests waiting for agents to end, by agent ID."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}

    @contextlib.contextmanager
    def watching(self, agent_id: str) -> Iterator[asyncio.Future[None]]:
        """A future that resolves when `agent_id` ends; register before reading the record
        (an end applied between the read and the wait is then not missed)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(agent_id, set())
        waiting.add(future)
        try:
            yield future
        finally:
            waiting.discard(future)
            if not waiting:
                self._waiting.pop(agent_id, None)

    def changed(self, agent_id: str, status: str) -> None:
        """Called with every record the processor writes."""
        if status in ENDED:
            for future in self._waiting.get(agent_id, ()):
                if not future.done():
                    future.set_result(None)

    def __len__(self) -> int:
        return sum(len(futures) for futures in self._waiting.values())
