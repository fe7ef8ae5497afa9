"""Durable timers: the records hold them; this finds the due ones and fires them.

Each agent's record keeps its pending timers (RocksDB, changelogged), so they survive
crashes and rebalances. The processor indexes the timers of the agents it owns (rebuilt
by a scan whenever its ownership may have changed) and, when a timer is due, sends a
`timer` record to agent-events. The agent applies it like any input, once: a fire for a
timer that is no longer pending, or whose `fire_at` is not the due time the timer is
armed for, is ignored by the engine. So every fire carries exactly the due time stored
in the record for its timer ID.

Re-sending. A fire can be lost (the producer died before the broker had it) or be slow
to apply (the partition lags behind a backlog). Until the agent's record shows the timer
gone, the fire is sent again, but not every few seconds: the wait after each send
doubles from `REFIRE_FIRST_S` up to `REFIRE_MAX_S`. We considered re-sending only once
the consumer has passed the offset the fire landed at; that needs the produce offset of
every fire and the consumer's position per partition from Faust's internals, and it still
needs a timeout for a fire that never landed. The growing wait needs neither and bounds
the duplicates of a fire on its way to about one a minute; each duplicate is harmless
(same message ID, same due time; the engine ignores a fire for a timer already done).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from agentstream.topics import TimerFired, derived_message_id

from ..engine import AgentRecord

log = logging.getLogger("agentstream.timers")

REFIRE_FIRST_S = 5.0  # wait after the first send of a fire before sending it again
REFIRE_MAX_S = 60.0  # the wait doubles after each re-send, up to this
ERROR_BACKOFF_MAX_S = 10.0  # longest pause between timer ticks while they keep failing
HEAP_SLACK = 16  # superseded heap entries tolerated beyond 2x the live ones before a rebuild

TimerKey = tuple[str, datetime]  # (timer ID, due time it was armed for)


@dataclass
class _Fire:
    """A fire sent and not yet seen applied: when to send it again, and the wait that set it."""

    resend_at: float
    wait_s: float


class TimerIndex:
    """What the processor knows of the agents it owns: status, pending timers, fires on their way.

    Kept up to date by the handler after every turn (`track_record`) and rebuilt by a scan
    after a change of ownership (`reset`). Counts are maintained as entries change, so a
    `/metrics` scrape reads them in O(1). `_next` holds, for each agent with timers, when
    the timer service should look at it next; the heap orders those times and may hold
    superseded entries (an entry counts only while it equals `_next`), which are dropped
    by a rebuild once they outnumber the live ones.
    """

    def __init__(self) -> None:
        self._sent: dict[str, dict[TimerKey, _Fire]] = {}
        self._clear()

    def _clear(self) -> None:
        """Forget every agent except the memory of fires on their way (`reset` prunes that)."""
        self._status: dict[str, str] = {}
        self._by_status: Counter[str] = Counter()
        self._timers: dict[str, dict[str, datetime]] = {}  # only agents with pending timers
        self._pending = 0
        self._next: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    # --- what the handler and the scan report ---------------------------------------------

    def track(self, agent_id: str, status: str, timers: dict[str, datetime]) -> None:
        """The agent's record now has this status and these timers."""
        old_status = self._status.get(agent_id)
        if old_status != status:
            if old_status is not None:
                self._by_status[old_status] -= 1
            self._by_status[status] += 1
            self._status[agent_id] = status
        self._pending += len(timers) - len(self._timers.get(agent_id, ()))
        if timers:
            self._timers[agent_id] = dict(timers)
        else:
            self._timers.pop(agent_id, None)
        sent = self._sent.get(agent_id)
        if sent is not None:  # a fire whose timer is gone or re-armed for another time was applied
            for key in [key for key in sent if timers.get(key[0]) != key[1]]:
                del sent[key]
            if not sent:
                del self._sent[agent_id]
        self._arm(agent_id)

    def track_record(self, record: AgentRecord) -> None:
        self.track(record.agent_id, record.status.value, record.timers)

    def forget(self, agent_id: str) -> None:
        """The agent is no longer here (no record, or not owned): drop everything about it."""
        status = self._status.pop(agent_id, None)
        if status is not None:
            self._by_status[status] -= 1
        self._pending -= len(self._timers.pop(agent_id, ()))
        self._sent.pop(agent_id, None)
        self._next.pop(agent_id, None)

    def reset(self, records: Iterable[tuple[str, str, dict[str, datetime]]]) -> None:
        """Replace the index with these agents (a scan of the owned partitions).

        The scan is read to the end first, so one that fails leaves the index as it was.
        Memory of fires on their way is kept for the agents still owned.
        """
        rows = list(records)
        self._clear()
        for agent_id, status, timers in rows:
            self.track(agent_id, status, timers)
        for agent_id in [agent_id for agent_id in self._sent if agent_id not in self._status]:
            del self._sent[agent_id]

    # --- what the timer service asks and reports --------------------------------------------

    def due(self, now: float) -> list[str]:
        """Agents to look at now. Each leaves the schedule until `track`, `sent` or `wake` re-arms it."""
        agents = []
        while self._heap and self._heap[0][0] <= now:
            when, agent_id = heapq.heappop(self._heap)
            if self._next.get(agent_id) == when:  # else superseded
                del self._next[agent_id]
                agents.append(agent_id)
        return agents

    def to_fire(self, agent_id: str, now: float) -> list[TimerKey]:
        """Timers of the agent due by `now` whose fire was not sent, or waited long enough."""
        sent = self._sent.get(agent_id, {})
        return [
            (timer_id, at)
            for timer_id, at in self._timers.get(agent_id, {}).items()
            if at.timestamp() <= now and ((timer_id, at) not in sent or sent[(timer_id, at)].resend_at <= now)
        ]

    def sent(self, agent_id: str, timer_id: str, at: datetime, now: float) -> None:
        """A fire for this timer went out at `now`: send it again only after a wait that doubles."""
        if self._timers.get(agent_id, {}).get(timer_id) != at:
            return  # applied (or re-armed) while the fire was being sent
        fires = self._sent.setdefault(agent_id, {})
        before = fires.get((timer_id, at))
        wait = REFIRE_FIRST_S if before is None else min(2 * before.wait_s, REFIRE_MAX_S)
        fires[(timer_id, at)] = _Fire(now + wait, wait)
        self._arm(agent_id)

    def wake(self, agent_id: str, at: float) -> None:
        """Look at the agent at `at` (after a failure), if it still has timers."""
        if agent_id in self._timers:
            self._schedule(agent_id, at)

    # --- figures --------------------------------------------------------------------------

    def count(self, status: str) -> int:
        """Owned agents with this status."""
        return self._by_status[status]

    def agents_with_timers(self) -> int:
        return len(self._timers)

    def pending_timers(self) -> int:
        return self._pending

    def fires_in_flight(self) -> int:
        """Fires sent whose timer is still pending in the agent's record."""
        return sum(len(fires) for fires in self._sent.values())

    def heap_entries(self) -> int:
        return len(self._heap)

    # --- internals --------------------------------------------------------------------------

    def _arm(self, agent_id: str) -> None:
        timers = self._timers.get(agent_id)
        if not timers:
            self._next.pop(agent_id, None)
            return
        sent = self._sent.get(agent_id, {})
        self._schedule(agent_id, min(
            sent[(timer_id, at)].resend_at if (timer_id, at) in sent else at.timestamp()
            for timer_id, at in timers.items()
        ))

    def _schedule(self, agent_id: str, when: float) -> None:
        if self._next.get(agent_id) == when:
            return  # its heap entry is there already
        self._next[agent_id] = when
        heapq.heappush(self._heap, (when, agent_id))
        if len(self._heap) > 2 * len(self._next) + HEAP_SLACK:
            self._heap = [(when, agent_id) for agent_id, when in self._next.items()]
            heapq.heapify(self._heap)


def summary(value: bytes) -> tuple[str, str, dict[str, datetime]]:
    """Agent ID, status and timers of a stored record, without validating all of it."""
    data = json.loads(value)
    timers = {key: datetime.fromisoformat(at.replace("Z", "+00:00")) for key, at in data.get("timers", {}).items()}
    return data["agent_id"], data["status"], timers


class TimerService:
    """Fires due timers of the owned agents; rescans the table whenever ownership may have changed.

    `assignment` returns None while the processor is not ready (restoring, rebalancing),
    else a token that changes with every rebalance (the app passes Faust's rebalance
    count with the assigned partitions). The index is rebuilt when the token differs from
    the one of the last scan, and also after any tick that saw the processor not ready:
    an A -> B -> A reassignment gives back the same partitions, but B changed the records.
    """

    def __init__(
        self,
        index: TimerIndex,
        *,
        read: Callable[[bytes], bytes | None],
        scan: Callable[[], Iterable[bytes]],
        assignment: Callable[[], object | None],
        send: Callable[[TimerFired], Awaitable[None]],
        on_fire: Callable[[], None] = lambda: None,
        on_error: Callable[[], None] = lambda: None,
        tick_s: float = 0.1,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.index = index
        self._read, self._scan, self._assignment, self._send = read, scan, assignment, send
        self._on_fire, self._on_error = on_fire, on_error
        self._tick_s, self._clock, self._sleep = tick_s, clock, sleep
        self._scanned_for: object | None = None
        self._stale = True  # no scan yet

    def rescan(self) -> None:
        """Rebuild the index on the next tick (records changed behind the handler's back: a repair)."""
        self._stale = True

    async def run_forever(self) -> None:
        """Tick every `tick_s`; while ticks fail, pause twice as long each time, logging once."""
        failures = 0
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. a rebalance in the middle of a scan, the broker unreachable
                failures += 1
                self._on_error()
                if failures == 1:
                    log.exception("timer tick failed; retrying with back-off (logged once until a tick succeeds)")
                else:
                    log.debug("timer tick failed again", exc_info=True, extra={"failures": failures})
            else:
                if failures:
                    log.info("timer ticks recovered", extra={"failures": failures})
                failures = 0
            delay = self._tick_s if not failures else min(ERROR_BACKOFF_MAX_S, self._tick_s * 2**failures)
            await self._sleep(delay)

    async def tick(self) -> int:
        """Fire what is due; returns the number of fires sent."""
        token = self._assignment()
        if token is None:  # not ready: restoring or rebalancing
            self._stale = True
            return 0
        if self._stale or token != self._scanned_for:
            self.index.reset(summary(value) for value in self._scan())
            self._scanned_for, self._stale = token, False
            log.info("timers re-armed", extra={"agents": self.index.agents_with_timers(),
                                               "timers": self.index.pending_timers()})
        now = self._clock()
        fired = 0
        agents = self.index.due(now)
        for position, agent_id in enumerate(agents):
            try:
                fired += await self._fire(agent_id, now)
            except BaseException:
                self.index.wake(agent_id, now + REFIRE_FIRST_S)  # a record that keeps failing waits
                for other in agents[position + 1:]:
                    self.index.wake(other, now)  # the rest: on the next tick
                raise
        return fired

    async def _fire(self, agent_id: str, now: float) -> int:
        value = self._read(agent_id.encode())
        if value is None:
            self.index.forget(agent_id)
            return 0
        record = AgentRecord.from_bytes(value)
        self.index.track_record(record)  # the stored record is the truth: heals a stale index
        fired = 0
        for timer_id, at in self.index.to_fire(agent_id, now):
            await self._send(TimerFired(
                message_id=derived_message_id(record.run_id, f"timer:{timer_id}:{at.isoformat()}"),
                agent_id=record.agent_id,
                run_id=record.run_id,
                timer_id=timer_id,
                fire_at=at,  # exactly the due time stored for this timer ID
                sent_at=datetime.now(timezone.utc),
            ))
            self.index.sent(agent_id, timer_id, at, now)
            fired += 1
            self._on_fire()
        return fired
