"""The processor's timer index and timer service, driven with a dict as the table.

The service only needs four callables (read a record, scan the owned records, the
ownership token, send a fire), so these tests drive it tick by tick with a fake clock:
no broker, no sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from agentstream.streams.engine import AgentRecord
from agentstream.streams.processor.timers import (
    REFIRE_FIRST_S,
    REFIRE_MAX_S,
    TimerIndex,
    TimerService,
)
from agentstream.topics import AgentStatus, TimerFired, derived_message_id

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)


def record(agent_id: str, timers: dict[str, datetime] | None = None, *,
           status: AgentStatus = AgentStatus.RUNNING) -> AgentRecord:
    return AgentRecord(
        agent_id=agent_id, agent_type="sleeper", run_id=f"run-{agent_id}", status=status,
        created_at=T0, updated_at=T0, timers=timers or {},
    )


@dataclass
class Rig:
    """A table, an ownership token and a clock the test controls; what the service sent."""

    table: dict[bytes, bytes] = field(default_factory=dict)
    token: object | None = "gen-1"
    now: float = T0.timestamp()
    scans: int = 0
    sent: list[TimerFired] = field(default_factory=list)
    send_errors: int = 0
    scan_errors: int = 0
    reads: int = 0
    delays: list[float] = field(default_factory=list)
    sleep_budget_s: float = 0.0
    index: TimerIndex = field(default_factory=TimerIndex)
    service: TimerService = field(init=False)

    def __post_init__(self) -> None:
        self.service = TimerService(
            self.index, read=self.read, scan=self.scan, assignment=lambda: self.token,
            send=self.send, clock=lambda: self.now, sleep=self.sleep,
        )

    def read(self, key: bytes) -> bytes | None:
        self.reads += 1
        return self.table.get(key)

    async def sleep(self, seconds: float) -> None:
        """`run_forever`'s pause: recorded, and the end of the run once the budget is spent."""
        self.delays.append(seconds)
        if sum(self.delays) >= self.sleep_budget_s:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    async def run_for(self, virtual_s: float) -> None:
        self.sleep_budget_s = virtual_s
        with pytest.raises(asyncio.CancelledError):
            await self.service.run_forever()

    def put(self, rec: AgentRecord) -> None:
        self.table[rec.agent_id.encode()] = rec.to_bytes()

    def apply(self, rec: AgentRecord) -> None:
        """What the handler does after a turn: store the record and track it."""
        self.put(rec)
        self.index.track_record(rec)

    def scan(self) -> list[bytes]:
        self.scans += 1
        if self.scan_errors:
            self.scan_errors -= 1
            raise RuntimeError("partition revoked in the middle of the scan")
        return list(self.table.values())

    async def send(self, fired: TimerFired) -> None:
        if self.send_errors:
            self.send_errors -= 1
            raise ConnectionError("broker unreachable")
        self.sent.append(fired)

    async def tick_at(self, seconds: float) -> int:
        self.now = T0.timestamp() + seconds
        return await self.service.tick()


# --- item 12: rescan after every change of ownership ------------------------------------------


async def test_a_reassignment_back_to_the_same_partitions_rescans_the_table() -> None:
    rig = Rig(token=frozenset({"agent-events-0"}))
    rig.put(record("a"))
    await rig.tick_at(0)
    assert rig.scans == 1
    # A -> B -> A while not ready: B's processor armed a timer for "a" that this index never saw.
    rig.token = None
    await rig.tick_at(1)
    rig.put(record("a", {"t:1": T0 + timedelta(seconds=2)}))
    rig.token = frozenset({"agent-events-0"})  # the same set as before
    await rig.tick_at(3)
    assert rig.scans == 2
    assert [f.timer_id for f in rig.sent] == ["t:1"]


async def test_a_new_ownership_token_rescans_even_when_not_ready_was_never_observed() -> None:
    rig = Rig(token=(1, frozenset({"p0"})))
    await rig.tick_at(0)
    rig.put(record("a", {"t:1": T0 + timedelta(seconds=2)}))
    rig.token = (2, frozenset({"p0"}))  # a whole rebalance happened between two ticks
    await rig.tick_at(3)
    assert rig.scans == 2 and [f.timer_id for f in rig.sent] == ["t:1"]


async def test_the_same_ownership_token_does_not_rescan() -> None:
    rig = Rig()
    for second in range(5):
        await rig.tick_at(second)
    assert rig.scans == 1


async def test_agents_of_partitions_no_longer_owned_leave_the_index_on_rescan() -> None:
    rig = Rig()
    rig.put(record("a", {"t:1": T0 + timedelta(hours=1)}))
    rig.put(record("b", status=AgentStatus.COMPLETED))
    await rig.tick_at(0)
    assert rig.index.agents_with_timers() == 1 and rig.index.count("completed") == 1
    rig.table.clear()  # their partition went to another processor
    rig.token = "gen-2"
    await rig.tick_at(1)
    assert rig.index.agents_with_timers() == 0 and rig.index.pending_timers() == 0
    assert rig.index.count("running") == 0 and rig.index.count("completed") == 0


# --- item 18a: a failing tick backs off and does not rescan the table every time --------------


async def test_a_failing_scan_backs_off_exponentially_and_logs_once_per_streak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(scan_errors=10**6)
    with caplog.at_level(logging.INFO, logger="agentstream.timers"):
        await rig.run_for(60.0)
    assert rig.scans <= 12, f"{rig.scans} full scans in 60 s of errors"  # was 600 (one per 100 ms tick)
    assert rig.delays == sorted(rig.delays) and rig.delays[-1] == pytest.approx(10.0)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


async def test_ticks_recover_after_a_streak_and_log_it(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(scan_errors=3)
    with caplog.at_level(logging.INFO, logger="agentstream.timers"):
        await rig.run_for(5.0)
    assert rig.delays[:4] == [0.2, 0.4, 0.8, 0.1]  # back to the normal tick once a scan succeeded
    assert rig.scans == 4
    assert [r.levelno for r in caplog.records if "tick" in r.getMessage()] == [logging.ERROR, logging.INFO]


async def test_a_failed_send_is_retried_without_rescanning_the_table() -> None:
    rig = Rig(send_errors=1)
    rig.apply(record("a", {"t:1": T0 + timedelta(seconds=1)}))
    await rig.tick_at(0)
    with pytest.raises(ConnectionError):
        await rig.tick_at(2)
    await rig.tick_at(2 + REFIRE_FIRST_S)
    assert rig.scans == 1
    assert [f.timer_id for f in rig.sent] == ["t:1"]


async def test_a_failure_on_one_due_agent_does_not_lose_the_other_due_agents() -> None:
    rig = Rig()
    rig.apply(record("a", {"t:1": T0 + timedelta(seconds=1)}))
    rig.apply(record("b", {"t:1": T0 + timedelta(seconds=1)}))
    await rig.tick_at(0)
    rig.send_errors = 1
    with pytest.raises(ConnectionError):
        await rig.tick_at(2)
    await rig.tick_at(2.1)
    assert len({f.agent_id for f in rig.sent}) == 1  # the agent whose send failed waits a while
    await rig.tick_at(2 + REFIRE_FIRST_S)
    assert sorted(f.agent_id for f in rig.sent) == ["a", "b"]


# --- item 18b: agents by status and pending timers are kept, not recounted ---------------------


def test_counts_follow_track_status_changes_and_forget() -> None:
    index = TimerIndex()
    index.track("a", "running", {"t:1": T0, "t:2": T0})
    index.track("b", "running", {})
    assert (index.count("running"), index.pending_timers(), index.agents_with_timers()) == (2, 2, 1)
    index.track("a", "completed", {})
    assert (index.count("running"), index.count("completed"), index.pending_timers()) == (1, 1, 0)
    index.track("b", "stuck", {"t:9": T0})
    index.forget("a")
    index.forget("never-seen")
    assert (index.count("running"), index.count("completed"), index.count("stuck")) == (0, 0, 1)
    assert (index.pending_timers(), index.agents_with_timers()) == (1, 1)


def test_counts_equal_a_recount_after_random_tracks_resets_and_forgets() -> None:
    rng = random.Random(7)
    index = TimerIndex()
    truth: dict[str, tuple[str, dict[str, datetime]]] = {}
    statuses = [s.value for s in AgentStatus]
    for _ in range(3000):
        agent = f"a{rng.randrange(40)}"
        roll = rng.random()
        if roll < 0.1:
            index.forget(agent)
            truth.pop(agent, None)
        elif roll < 0.12:
            kept = dict(rng.sample(sorted(truth.items()), k=len(truth) // 2))
            index.reset((a, s, t) for a, (s, t) in kept.items())
            truth = kept
        else:
            timers = {f"t:{i}": T0 + timedelta(seconds=rng.randrange(100)) for i in range(rng.randrange(4))}
            status = rng.choice(statuses)
            index.track(agent, status, timers)
            truth[agent] = (status, timers)
        recount = Counter(status for status, _ in truth.values())
        assert all(index.count(s) == recount[s] for s in statuses)
        assert index.pending_timers() == sum(len(t) for _, t in truth.values())
        assert index.agents_with_timers() == sum(1 for _, t in truth.values() if t)


# --- item 18c: superseded heap entries do not accumulate ----------------------------------------


def test_the_heap_stays_bounded_when_agents_are_re_tracked_many_times() -> None:
    index = TimerIndex()
    for n in range(10_000):
        index.track(f"a{n % 10}", "running", {"t:1": T0 + timedelta(seconds=n)})
    assert index.heap_entries() <= 2 * 10 + 16


async def test_the_heap_stays_bounded_while_fires_are_resent() -> None:
    rig = Rig()
    rig.apply(record("a", {"t:1": T0}))
    for second in range(0, 3600, 5):
        await rig.tick_at(second)
        rig.index.track_record(record("a", {"t:1": T0}))  # unrelated turns of the lagging agent
    assert rig.index.heap_entries() <= 2 + 16


# --- item 11: fires carry their due time; a fire on its way is not re-sent every 5 s -------------


async def test_every_fire_carries_exactly_the_due_time_stored_for_its_timer() -> None:
    rig = Rig()
    due = T0 + timedelta(seconds=1, microseconds=123457)
    later = T0 + timedelta(days=30, microseconds=1)
    rec = record("a", {"t:1": due, "retry:3": due + timedelta(microseconds=1), "t:2": later})
    rig.apply(rec)
    await rig.tick_at(2)
    fires = {f.timer_id: f for f in rig.sent}
    assert set(fires) == {"t:1", "retry:3"}
    for timer_id, fired in fires.items():
        assert fired.fire_at == rec.timers[timer_id]
        assert (fired.agent_id, fired.run_id) == ("a", rec.run_id)
        assert fired.message_id == derived_message_id(rec.run_id, f"timer:{timer_id}:{rec.timers[timer_id].isoformat()}")
    decoded = [TimerFired.model_validate_json(f.to_bytes()) for f in rig.sent]
    assert all(d.fire_at == rec.timers[d.timer_id] for d in decoded)  # and on the wire


async def test_a_fire_not_applied_is_re_sent_at_growing_intervals_up_to_a_cap() -> None:
    rig = Rig()
    rig.apply(record("a", {"t:1": T0}))
    sent_at: list[int] = []
    for second in range(0, 400):
        if await rig.tick_at(second):
            sent_at.append(second)
    gaps = [round(b - a, 1) for a, b in zip(sent_at, sent_at[1:])]
    assert sent_at[0] == 0
    assert gaps[:5] == [REFIRE_FIRST_S, 2 * REFIRE_FIRST_S, 4 * REFIRE_FIRST_S, 8 * REFIRE_FIRST_S, REFIRE_MAX_S]
    assert set(gaps[4:]) == {REFIRE_MAX_S}


async def test_a_turn_of_a_lagging_agent_does_not_make_its_fire_go_out_again() -> None:
    rig = Rig()
    rig.apply(record("a", {"t:1": T0}))
    await rig.tick_at(0)
    rig.apply(record("a", {"t:1": T0, "t:2": T0 + timedelta(hours=1)}))  # another input, fire not yet applied
    for second in range(1, int(REFIRE_FIRST_S)):
        await rig.tick_at(second)
    assert len(rig.sent) == 1


async def test_an_applied_fire_is_forgotten_and_a_new_timer_fires_at_once() -> None:
    rig = Rig()
    rig.apply(record("a", {"t:1": T0}))
    await rig.tick_at(0)
    rig.apply(record("a", {"t:2": T0 + timedelta(seconds=1)}))  # t:1 applied; the agent slept again
    assert rig.index.fires_in_flight() == 0
    await rig.tick_at(1)
    assert [f.timer_id for f in rig.sent] == ["t:1", "t:2"]


async def test_a_retry_timer_re_armed_with_the_same_id_fires_for_its_new_due_time() -> None:
    rig = Rig()
    rig.apply(record("a", {"retry:1": T0}))
    await rig.tick_at(0)
    rig.apply(record("a", {"retry:1": T0 + timedelta(seconds=1)}))  # applied, failed again, new backoff
    await rig.tick_at(1)
    assert [f.fire_at for f in rig.sent] == [T0, T0 + timedelta(seconds=1)]


# --- no leak: agents without timers, or without a record, leave the timer bookkeeping ----------


async def test_an_agent_whose_stored_record_has_no_timers_leaves_the_schedule() -> None:
    rig = Rig()
    rig.apply(record("a", {"t:1": T0 + timedelta(seconds=10)}))
    await rig.tick_at(0)
    rig.put(record("a", status=AgentStatus.COMPLETED))  # the index is stale: it never saw this version
    for second in range(1, 120):
        await rig.tick_at(second)
    assert rig.reads == 1 and rig.sent == []  # read once when due, never again
    assert rig.index.agents_with_timers() == 0 and rig.index.heap_entries() == 0
    assert rig.index.count("completed") == 1 and rig.index.count("running") == 0


async def test_an_agent_whose_record_is_gone_is_forgotten() -> None:
    rig = Rig()
    await rig.tick_at(0)
    rig.index.track("ghost", "running", {"t:1": T0})
    await rig.tick_at(1)
    assert rig.index.agents_with_timers() == 0 and rig.index.count("running") == 0
    assert rig.index.heap_entries() == 0


def test_an_agent_whose_timers_are_applied_leaves_the_timer_bookkeeping() -> None:
    index = TimerIndex()
    index.track("a", "running", {"t:1": T0})
    index.sent("a", "t:1", T0, T0.timestamp())
    index.track("a", "completed", {})
    assert (index.agents_with_timers(), index.fires_in_flight(), index.pending_timers()) == (0, 0, 0)
    assert index.due(T0.timestamp() + 10**6) == []
