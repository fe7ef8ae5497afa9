"""Changelog records read out of offset order never take a key back to an older record.

Faust's recovery applies records in the order it reads them, and it reads a partition
out of order at times (records fetched before a rebalance reset its last-seen offset wait
in its queue): the chaos runs restored agents one turn old that way. These tests drive a
real Faust table on RocksDB through the method Faust's recovery calls.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

from agentstream.streams.processor.changelog_order import ChangelogOrder

CHANGELOG = TP("app-agents-changelog", 1)
OTHER = TP("app-agents-changelog", 2)


@pytest.fixture
def table(tmp_path: Path) -> Any:
    app = faust.App("changelog-order", store="rocksdb://", datadir=str(tmp_path), key_serializer="raw",
                    value_serializer="raw")
    table = app.Table("agents", key_type=bytes, value_type=bytes, partitions=4)
    table._on_changelog_sent = lambda fut: None  # the table's own acknowledgement handling is not under test
    return table


def record(offset: int, key: bytes, value: bytes | None, tp: TP = CHANGELOG) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=tp, partition=tp.partition, offset=offset, key=key, value=value))


def stored(table: Any, key: bytes, tp: TP = CHANGELOG) -> bytes | None:
    value: bytes | None = table.data._db_for_partition(tp.partition).get(key)
    return value


def test_an_older_record_read_after_a_newer_one_is_dropped(table: Any) -> None:
    order = ChangelogOrder(table)
    order.install()
    table.apply_changelog_batch([record(326, b"w9-a3", b"turn 22"), record(327, b"w9-a3", b"turn 23")])
    table.apply_changelog_batch([record(326, b"w9-a3", b"turn 22")])  # read again, after the newer one
    assert stored(table, b"w9-a3") == b"turn 23"
    assert order.dropped == 1


def test_within_one_batch_the_newest_record_of_a_key_wins(table: Any) -> None:
    ChangelogOrder(table).install()
    table.apply_changelog_batch([record(50, b"a", b"new"), record(40, b"a", b"old"), record(45, b"a", None)])
    assert stored(table, b"a") == b"new"


def test_a_partition_read_late_first_keeps_the_early_records_of_other_keys(table: Any) -> None:
    """The per-partition floor that was tried before lost these; per key they are applied."""
    ChangelogOrder(table).install()
    table.apply_changelog_batch([record(1500, b"a", b"a late"), record(1501, b"b", b"b late")])
    table.apply_changelog_batch([record(3, b"a", b"a early"), record(4, b"c", b"c only"), record(5, b"b", None)])
    assert (stored(table, b"a"), stored(table, b"b"), stored(table, b"c")) == (b"a late", b"b late", b"c only")


def test_the_same_key_in_another_partition_is_ordered_on_its_own(table: Any) -> None:
    ChangelogOrder(table).install()
    table.apply_changelog_batch([record(900, b"k", b"p1", tp=CHANGELOG)])
    table.apply_changelog_batch([record(10, b"k", b"p2", tp=OTHER)])
    assert stored(table, b"k", tp=OTHER) == b"p2"


def test_a_newer_record_by_another_writer_replaces_an_acknowledged_own_write(table: Any) -> None:
    order = ChangelogOrder(table)
    order.install()
    table.data._db_for_partition(CHANGELOG.partition).put(b"k", b"own")  # the processor writes RocksDB first
    sent = SimpleNamespace(message=SimpleNamespace(key=b"k"),
                           result=lambda: SimpleNamespace(topic_partition=CHANGELOG, offset=70))
    table._on_changelog_sent(sent)
    table.apply_changelog_batch([record(69, b"k", b"older than ours")])
    assert stored(table, b"k") == b"own" and order.dropped == 1
    table.apply_changelog_batch([record(71, b"k", b"another writer's, later")])
    assert stored(table, b"k") == b"another writer's, later"


def test_an_acknowledgement_is_handed_on_to_what_was_installed_before(table: Any) -> None:
    handed: list[Any] = []
    table._on_changelog_sent = handed.append
    ChangelogOrder(table).install()
    sent = SimpleNamespace(message=SimpleNamespace(key=b"k"),
                           result=lambda: SimpleNamespace(topic_partition=CHANGELOG, offset=1))
    table._on_changelog_sent(sent)
    assert handed == [sent]


def test_a_failed_write_records_nothing(table: Any) -> None:
    order = ChangelogOrder(table)
    order.install()

    def failed() -> Any:
        raise RuntimeError("broker unavailable")

    table._on_changelog_sent(SimpleNamespace(message=SimpleNamespace(key=b"k"), result=failed))
    table.apply_changelog_batch([record(5, b"k", b"from the changelog")])
    assert stored(table, b"k") == b"from the changelog" and order.dropped == 0


def test_an_own_write_read_back_from_the_changelog_is_applied_and_moves_the_persisted_offset(table: Any) -> None:
    """A write acknowledged after a rebalance took its partition is not in RocksDB (publish.py): read
    back, it must land there. And a recovery that reads back its own flushed writes must move the
    persisted offset over them, or the restore point stays behind them (restore_point.py)."""
    order = ChangelogOrder(table)
    order.install()
    sent = SimpleNamespace(message=SimpleNamespace(key=b"k"),
                           result=lambda: SimpleNamespace(topic_partition=CHANGELOG, offset=70))
    table._on_changelog_sent(sent)  # acknowledged; RocksDB did not get it
    table.apply_changelog_batch([record(69, b"k", b"older"), record(70, b"k", b"ours, from the changelog")])
    assert stored(table, b"k") == b"ours, from the changelog"
    assert table.data.persisted_offset(CHANGELOG) == 70
    assert order.dropped == 1  # only the older one
