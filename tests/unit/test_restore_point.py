"""A table's restore point moves only over this process's own gap-free changelog writes.

Faust moves it on every acknowledged write; an acknowledgement that lands after another
processor wrote to the partition then declares that processor's records applied here,
and a later restore skips them (agents come back some turns old). These tests drive a
real Faust table on RocksDB; the acknowledgements are what the producer reports.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

from agentstream.streams.processor.restore_point import RestorePoint

CHANGELOG = TP("app-agents-changelog", 2)


@pytest.fixture
def table(tmp_path: Path) -> Any:
    app = faust.App("restore-point", store="rocksdb://", datadir=str(tmp_path), key_serializer="raw",
                    value_serializer="raw")
    return app.Table("agents", key_type=bytes, value_type=bytes, partitions=4)


def ack(offset: int, tp: TP = CHANGELOG) -> Any:
    return SimpleNamespace(result=lambda: SimpleNamespace(topic_partition=tp, offset=offset))


async def restored(table: Any, point: RestorePoint, persisted: int | None, highwater: int = 0) -> None:
    if persisted is not None:
        table.data.set_persisted_offset(CHANGELOG, persisted)
    recovery = table.app.tables.recovery
    recovery.actives_for_table[table] = {CHANGELOG}
    recovery.active_highwaters[CHANGELOG] = highwater
    await point.on_restored()


async def test_own_consecutive_writes_move_the_restore_point(table: Any) -> None:
    point = RestorePoint(table)
    await restored(table, point, persisted=10, highwater=10)
    for offset in (11, 12, 13):
        point.on_sent(ack(offset))
    assert table.data.persisted_offset(CHANGELOG) == 13


async def test_a_write_after_another_writers_records_freezes_the_restore_point(table: Any) -> None:
    point = RestorePoint(table)
    await restored(table, point, persisted=10, highwater=10)
    point.on_sent(ack(11))
    point.on_sent(ack(15))  # offsets 12-14 were written by another processor: this table never saw them
    point.on_sent(ack(16))
    assert table.data.persisted_offset(CHANGELOG) == 11  # a restart reads 12-16 again


async def test_acknowledgements_count_only_between_a_restore_and_the_next_rebalance(table: Any) -> None:
    point = RestorePoint(table)
    table.data.set_persisted_offset(CHANGELOG, 10)
    point.on_sent(ack(11))  # before any restore: unknown what the table holds
    assert table.data.persisted_offset(CHANGELOG) == 10
    await restored(table, point, persisted=None, highwater=10)
    point.forget()  # a rebalance: the partition may be another processor's now
    point.on_sent(ack(11))
    assert table.data.persisted_offset(CHANGELOG) == 10


async def test_an_empty_partition_starts_at_offset_zero_and_unknown_state_never_moves(table: Any) -> None:
    point = RestorePoint(table)
    await restored(table, point, persisted=None, highwater=-1)
    point.on_sent(ack(0))
    assert table.data.persisted_offset(CHANGELOG) == 0
    other = TP("app-agents-changelog", 3)
    point.on_sent(ack(0, other))  # a partition that was not restored here
    assert table.data.persisted_offset(other) is None


async def test_a_failed_write_moves_nothing(table: Any) -> None:
    point = RestorePoint(table)
    await restored(table, point, persisted=4, highwater=4)

    def failed() -> Any:
        raise RuntimeError("not delivered")

    point.on_sent(SimpleNamespace(result=failed))
    point.on_sent(ack(5))
    assert table.data.persisted_offset(CHANGELOG) == 5


def test_installed_on_a_table_it_receives_the_changelog_acknowledgements(table: Any) -> None:
    point = RestorePoint(table)
    point.install()
    assert table._on_changelog_sent == point.on_sent


def changelog_record(offset: int, key: bytes) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=CHANGELOG, partition=CHANGELOG.partition, offset=offset,
                                                   key=key, value=b"turn"))


def test_records_read_as_a_standby_fill_rocksdb_but_never_move_the_restore_point(table: Any) -> None:
    """Faust's standby reading can skip fetched records; the persisted offset must not move over
    such a hole, or the partition's promotion to active would start after it."""
    RestorePoint(table).install()
    table.data.set_persisted_offset(CHANGELOG, 40)  # what this process reflected as the owner
    recovery = table.app.tables.recovery
    recovery.standby_tps.add(CHANGELOG)
    table.apply_changelog_batch([changelog_record(53, b"a"), changelog_record(93, b"b")])  # 41-52: a hole
    assert table.data.persisted_offset(CHANGELOG) == 40
    assert table.data._db_for_partition(CHANGELOG.partition).get(b"b") == b"turn"

    recovery.standby_tps.discard(CHANGELOG)  # promoted: reads as the owner move it as before
    recovery.active_tps.add(CHANGELOG)
    table.apply_changelog_batch([changelog_record(41, b"c"), changelog_record(93, b"b")])
    assert table.data.persisted_offset(CHANGELOG) == 93

