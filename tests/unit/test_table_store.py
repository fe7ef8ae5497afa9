"""`FaustTableStore` puts a written record into RocksDB when the changelog acknowledges it,
unless a rebalance took its partition away in between: then the record comes from the
changelog, and a late acknowledgement must not overwrite what recovery applied since.
A real Faust table on RocksDB; only the producer is stood in for (no broker here)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

from agentstream.streams.processor.publish import FaustTableStore

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
