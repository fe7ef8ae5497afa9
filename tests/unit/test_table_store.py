"""`FaustTableStore` puts a written record into RocksDB when the changelog acknowledges it,
unless a rebalance took its partition away in between: then the record comes from the
changelog, and a late acknowledgement must not overwrite what recovery applied since.
Until then, what it answers (`get`, `values`) is the record as last written.
A real Faust table on RocksDB; only the producer is stood in for (no broker here)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

from agentstream.streams.engine import AgentRecord
from agentstream.streams.processor.publish import FaustTableStore
from agentstream.streams.processor.timers import TimerIndex, TimerService
from agentstream.topics import AgentStatus, TimerFired

PARTITION = 1
CHANGELOG = TP("store-agents-changelog", PARTITION)


class Sent:
    """The future `send_changelog` returns: its message, and once acknowledged, the broker's metadata."""

    def __init__(self, key: bytes, value: bytes) -> None:
        self.message = SimpleNamespace(key=key, value=value)
        self.offset: int | None = None

    def result(self) -> Any:
        assert self.offset is not None, "not acknowledged yet"
        return SimpleNamespace(topic_partition=CHANGELOG, offset=self.offset)


@pytest.fixture
def table(tmp_path: Path) -> Any:
    app = faust.App("store", store="rocksdb://", datadir=str(tmp_path), key_serializer="raw",
                    value_serializer="raw")
    table = app.Table("agents", key_type=bytes, value_type=bytes, partitions=4)
    table._on_changelog_sent = lambda fut: None  # the restore point's handling is not under test
    table.partition_for_key = lambda key: PARTITION  # the partition of the input being handled
    table.send_changelog = lambda partition, key, value: Sent(key, value)
    app.assignor.assigned_actives = lambda: {CHANGELOG}  # what `table.items()` covers: the owned partitions
    return table


def acknowledge(table: Any, sent: Sent, offset: int) -> None:
    sent.offset = offset
    table._on_changelog_sent(sent)  # the callback the producer runs (FaustTableStore installed its own)


def in_rocksdb(table: Any, key: bytes) -> bytes | None:
    value: bytes | None = table.data._db_for_partition(PARTITION).get(key)
    return value


def test_a_record_reaches_rocksdb_when_acknowledged_and_is_read_from_memory_before(table: Any) -> None:
    store = FaustTableStore(table)
    store.install()
    sent = store.put(b"a", b"turn 1")
    assert store.get(b"a") == b"turn 1" and in_rocksdb(table, b"a") is None
    acknowledge(table, sent, 10)
    assert in_rocksdb(table, b"a") == b"turn 1" and store.get(b"a") == b"turn 1"


def test_two_writes_in_flight_end_with_the_later_one(table: Any) -> None:
    store = FaustTableStore(table)
    store.install()
    first, second = store.put(b"a", b"turn 1"), store.put(b"a", b"turn 2")
    acknowledge(table, first, 10)
    assert store.get(b"a") == b"turn 2"  # the later write is still on its way
    acknowledge(table, second, 11)
    assert in_rocksdb(table, b"a") == b"turn 2"


def test_a_late_acknowledgement_after_a_rebalance_does_not_overwrite_the_new_owners_record(table: Any) -> None:
    store = FaustTableStore(table)
    store.install()
    sent = store.put(b"a", b"turn 1 by the old owner")
    store.forget({PARTITION})  # a rebalance moves the partition away (FaustTableStore's on_rebalance)
    # This processor reads the partition as a standby: the new owner's later record is applied.
    table.apply_changelog_batch([SimpleNamespace(message=SimpleNamespace(
        tp=CHANGELOG, partition=PARTITION, offset=12, key=b"a", value=b"turn 2 by the new owner"))])
    acknowledge(table, sent, 10)  # the old write's acknowledgement comes only now
    assert in_rocksdb(table, b"a") == b"turn 2 by the new owner"


def test_a_late_acknowledgement_from_before_a_rebalance_is_not_put_once_the_partition_came_back(table: Any) -> None:
    """The partition went away and came back, and the agent was written again, before the
    acknowledgement of the write from before: that older record must not reach RocksDB, or a
    death before the newer write's acknowledgement leaves RocksDB behind the changelog."""
    store = FaustTableStore(table)
    store.install()
    old = store.put(b"a", b"turn 1, before the rebalance")
    store.forget({PARTITION})  # revoked
    table.apply_changelog_batch([SimpleNamespace(message=SimpleNamespace(
        tp=CHANGELOG, partition=PARTITION, offset=12, key=b"a", value=b"turn 2 by the owner in between"))])
    store.forget({PARTITION})  # assigned back (restored from the changelog, as above)
    new = store.put(b"a", b"turn 3, after it came back")
    acknowledge(table, old, 10)  # the write from before the rebalance is acknowledged only now
    assert in_rocksdb(table, b"a") == b"turn 2 by the owner in between"
    assert store.get(b"a") == b"turn 3, after it came back"
    acknowledge(table, new, 13)
    assert in_rocksdb(table, b"a") == b"turn 3, after it came back" == store.get(b"a")


def test_values_are_what_get_answers_with_writes_on_their_way_in_place_of_rocksdb(table: Any) -> None:
    store = FaustTableStore(table)
    store.install()
    acknowledge(table, store.put(b"a", b"a turn 1"), 10)
    acknowledge(table, store.put(b"b", b"b turn 1"), 11)
    store.put(b"a", b"a turn 2")  # on its way
    store.put(b"c", b"c turn 1")  # a new agent, on its way
    assert sorted(store.values()) == [b"a turn 2", b"b turn 1", b"c turn 1"]


async def test_a_rescan_while_a_write_arming_a_timer_is_on_its_way_keeps_the_timer(table: Any) -> None:
    """What the processor's timer service scans after a rebalance (app.py passes `store.values`).
    Scanning RocksDB alone lost a timer armed by a turn whose write waited for the broker (a
    broker had died): nothing re-armed it when the write landed, and the agent waited forever."""
    store = FaustTableStore(table)
    store.install()
    due = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
    before = AgentRecord(agent_id="c1", agent_type="T", run_id="r1", status=AgentStatus.RUNNING, created_at=due,
                         updated_at=due)
    acknowledge(table, store.put(b"c1", before.to_bytes()), 10)
    armed = before.evolve(timers={"t:2": due})
    store.put(b"c1", armed.to_bytes())  # the turn that armed the timer: acknowledged only later
    sent: list[TimerFired] = []

    async def send(fired: TimerFired) -> None:
        sent.append(fired)

    service = TimerService(TimerIndex(), read=store.get, scan=store.values, assignment=lambda: "after a rebalance",
                           send=send, clock=lambda: due.timestamp() + 1)
    assert await service.tick() == 1
    assert [(f.agent_id, f.timer_id, f.fire_at) for f in sent] == [("c1", "t:2", due)]


class Acknowledgement(asyncio.Future[Any]):
    """`send_changelog`'s future as Faust makes it: awaitable, resolved before its callback runs."""

    def __init__(self, key: bytes, value: bytes) -> None:
        super().__init__()
        self.message = SimpleNamespace(key=key, value=value)

    def acknowledge(self, table: Any, offset: int) -> None:
        self.set_result(SimpleNamespace(topic_partition=CHANGELOG, offset=offset))
        table._on_changelog_sent(self)  # Faust's `_on_published`: the result first, then the callback


async def test_a_state_read_waits_for_the_agents_write_in_flight_then_rocksdb_has_it(table: Any) -> None:
    """The turn's outputs (an agent-update "cancelled") go out before its changelog write is
    acknowledged; the state API reads RocksDB, and must not answer older than what was seen."""
    store = FaustTableStore(table)
    store.install()
    table.send_changelog = lambda partition, key, value: Acknowledgement(key, value)
    written = store.put(b"a", b"cancelled")
    read = asyncio.ensure_future(store.caught_up(b"a", timeout=30))
    done, _ = await asyncio.wait([read], timeout=0.05)
    assert not done and in_rocksdb(table, b"a") is None  # still on its way: the read waits
    written.acknowledge(table, 10)
    await asyncio.wait_for(read, 5)
    assert in_rocksdb(table, b"a") == b"cancelled"


async def test_a_state_read_answers_from_what_is_durable_when_the_write_stays_unacknowledged(table: Any) -> None:
    store = FaustTableStore(table)
    store.install()
    table.send_changelog = lambda partition, key, value: Acknowledgement(key, value)
    store.put(b"a", b"turn 1")  # a broker down: never acknowledged
    await asyncio.wait_for(store.caught_up(b"a", timeout=0.05), 5)  # returns, bounded by its timeout
    assert in_rocksdb(table, b"a") is None
    await asyncio.wait_for(store.caught_up(b"nothing in flight", timeout=30), 1)  # no write: no wait
