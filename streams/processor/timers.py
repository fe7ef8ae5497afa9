"""Durable timers: the records hold them; this finds the due ones and fires them.

Each agent's record keeps its pending timers (RocksDB, changelogged), so they survive
crashes and rebalances. The processor indexes the next due time of the agents it owns
(rebuilt by a scan whenever its assignment changes) and, when a timer is due, sends a
`timer` record to agent-events. The agent applies it like any input, once: a fire for
a timer that is no longer pending is ignored.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone

from agentstream.topics import TimerFired, derived_message_id

from ..engine import AgentRecord

log = logging.getLogger("agentstream.timers")

REFIRE_AFTER_S = 5.0  # a fire not applied by then (e.g. lost with a crashed producer) is sent again


class TimerIndex:
    """Next due time and status of every agent this processor owns."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}
        self._pending: dict[str, int] = {}
        self._status: dict[str, str] = {}
        self._heap: list[tuple[float, str]] = []

    def track(self, agent_id: str, status: str, timers: dict[str, datetime]) -> None:
        self._status[agent_id] = status
        self._pending[agent_id] = len(timers)
        if not timers:
            self._next.pop(agent_id, None)
            return
        when = min(timers.values()).timestamp()
        if self._next.get(agent_id) != when:
            self._next[agent_id] = when
            heapq.heappush(self._heap, (when, agent_id))

    def track_record(self, record: AgentRecord) -> None:
        self.track(record.agent_id, record.status.value, record.timers)

    def postpone(self, agent_id: str, until: float) -> None:
        self._next[agent_id] = until
        heapq.heappush(self._heap, (until, agent_id))

    def due(self, now: float) -> list[str]:
        agents = []
        while self._heap and self._heap[0][0] <= now:
            when, agent_id = heapq.heappop(self._heap)
            if self._next.get(agent_id) == when:  # else superseded by a later track()
                agents.append(agent_id)
        return agents

    def reset(self, records: Iterable[tuple[str, str, dict[str, datetime]]]) -> None:
        self._next, self._pending, self._status, self._heap = {}, {}, {}, []
        for agent_id, status, timers in records:
            self.track(agent_id, status, timers)

    def agents_with_timers(self) -> int:
        return len(self._next)

    def pending_timers(self) -> int:
        return sum(self._pending.values())

    def agents_by_status(self) -> Counter[str]:
        return Counter(self._status.values())


def summary(value: bytes) -> tuple[str, str, dict[str, datetime]]:
    """Agent ID, status and timers of a stored record, without validating all of it."""
    data = json.loads(value)
    timers = {key: datetime.fromisoformat(at.replace("Z", "+00:00")) for key, at in data.get("timers", {}).items()}
    return data["agent_id"], data["status"], timers


class TimerService:
    """Fires due timers of the owned agents; rescans the table after each rebalance."""

    def __init__(
        self,
        index: TimerIndex,
        *,
        read: Callable[[bytes], bytes | None],
        scan: Callable[[], Iterable[bytes]],
        assignment: Callable[[], frozenset[object] | None],
        send: Callable[[TimerFired], Awaitable[None]],
        on_fire: Callable[[], None] = lambda: None,
        tick_s: float = 0.1,
    ) -> None:
        self.index = index
        self._read, self._scan, self._assignment, self._send = read, scan, assignment, send
        self._on_fire = on_fire
        self._tick_s = tick_s
        self._seen: frozenset[object] | None = None

    async def run_forever(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. a rebalance in the middle of a scan: try again next tick
                log.exception("timer tick failed")
                self._seen = None
            await asyncio.sleep(self._tick_s)

    async def tick(self) -> int:
        assignment = self._assignment()
        if assignment is None:  # not ready: restoring or rebalancing
            return 0
        if assignment != self._seen:
            self.index.reset(summary(value) for value in self._scan())
            self._seen = assignment
            log.info("timers re-armed", extra={"agents": self.index.agents_with_timers(), "timers": self.index.pending_timers()})
        now = time.time()
        fired = 0
        for agent_id in self.index.due(now):
            value = self._read(agent_id.encode())
            if value is None:
                continue
            record = AgentRecord.from_bytes(value)
            for timer_id, at in record.timers.items():
                if at.timestamp() <= now:
                    await self._send(TimerFired(
                        message_id=derived_message_id(record.run_id, f"timer:{timer_id}:{at.isoformat()}"),
                        agent_id=record.agent_id,
                        run_id=record.run_id,
                        timer_id=timer_id,
                        fire_at=at,
                        sent_at=datetime.now(timezone.utc),
                    ))
                    fired += 1
                    self._on_fire()
            later = [at.timestamp() for at in record.timers.values() if at.timestamp() > now]
            self.index.postpone(agent_id, min([now + REFIRE_AFTER_S, *later]))
        return fired
