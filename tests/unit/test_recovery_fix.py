"""Faust's changelog recovery never seeks below offset 0 (a processor crashed starting on it once)."""

from __future__ import annotations

import inspect
from collections import Counter
from typing import Any

import pytest
from faust.tables.recovery import Recovery
from faust.types import TP

from agentstream.streams.processor import recovery_fix


class Consumer:
    def __init__(self) -> None:
        self.seeks: list[dict[Any, int]] = []

    async def seek_wait(self, offsets: dict[Any, int]) -> None:
        for offset in offsets.values():
            if offset < 0:
                raise ValueError("Offset must be a positive integer")  # what aiokafka's seek does
        self.seeks.append(dict(offsets))


async def test_an_offset_below_minus_one_is_read_from_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # Faust's own method (another test may have installed the fix in this process already)
    monkeypatch.setattr(Recovery, "_seek_offsets", inspect.unwrap(Recovery._seek_offsets))
    tps = {TP("changelog", 0), TP("changelog", 1)}
    offsets: Counter[Any] = Counter({TP("changelog", 0): -2, TP("changelog", 1): 41})
    consumer = Consumer()
    with pytest.raises(ValueError):  # Faust alone crashes
        await Recovery._seek_offsets(object(), consumer, tps, Counter(offsets), "standby")  # type: ignore[arg-type]
    recovery_fix.install()
    recovery_fix.install()  # idempotent
    await Recovery._seek_offsets(object(), consumer, tps, offsets, "standby")  # type: ignore[arg-type]
    assert consumer.seeks == [{TP("changelog", 0): 0, TP("changelog", 1): 41}]


# -- changelog records are applied in offset order, never below what the table holds ---------------------------

def _changelog(tp: TP, offset: int, key: bytes, value: bytes) -> Any:
    from types import SimpleNamespace
    return SimpleNamespace(message=SimpleNamespace(tp=tp, partition=tp.partition, offset=offset, key=key, value=value))


@pytest.fixture
def guarded_table(tmp_path: Any) -> Any:
    """A real Faust table on RocksDB, guarded as the processor guards it (no broker needed to apply to it)."""
    import faust
    app = faust.App("recovery-order", store="rocksdb://", datadir=str(tmp_path), key_serializer="raw",
                    value_serializer="raw")
    table = app.Table("agents", key_type=bytes, value_type=bytes, partitions=4)
    recovery_fix.in_offset_order(table.data)
    return table


CHANGELOG = TP("recovery-order-agents-changelog", 1)


def _stored(table: Any, key: bytes) -> bytes:
    return bytes(table.data._db_for_partition(CHANGELOG.partition).get(key))


def test_records_read_again_after_a_rebalance_never_overwrite_newer_ones_in_the_same_batch(guarded_table: Any) -> None:
    # What Faust's buffer held in the chaos run: offsets up to 12, then 9-11 a second time.
    batch = [_changelog(CHANGELOG, o, b"agent", b"rev%d" % o) for o in (9, 10, 11, 12)]
    batch += [_changelog(CHANGELOG, o, b"agent", b"rev%d" % o) for o in (9, 10, 11)]
    guarded_table.data.apply_changelog_batch(batch, None, None)
    assert _stored(guarded_table, b"agent") == b"rev12"
    assert guarded_table.data.persisted_offset(CHANGELOG) == 12


def test_a_later_batch_of_records_the_table_already_holds_changes_nothing(guarded_table: Any) -> None:
    guarded_table.data.apply_changelog_batch([_changelog(CHANGELOG, 5, b"a", b"new"),
                                              _changelog(CHANGELOG, 6, b"b", b"b6")], None, None)
    guarded_table.data.apply_changelog_batch([_changelog(CHANGELOG, 4, b"a", b"old"),
                                              _changelog(CHANGELOG, 7, b"b", b"b7")], None, None)
    assert _stored(guarded_table, b"a") == b"new"
    assert _stored(guarded_table, b"b") == b"b7"
    assert guarded_table.data.persisted_offset(CHANGELOG) == 7


def test_without_the_guard_faust_applies_the_older_record_last(tmp_path: Any) -> None:
    import faust
    app = faust.App("recovery-order-bare", store="rocksdb://", datadir=str(tmp_path), key_serializer="raw",
                    value_serializer="raw")
    table = app.Table("agents", key_type=bytes, value_type=bytes, partitions=4)
    batch = [_changelog(CHANGELOG, o, b"agent", b"rev%d" % o) for o in (11, 12, 11)]
    table.data.apply_changelog_batch(batch, None, None)
    assert _stored(table, b"agent") == b"rev11"  # the loss the guard prevents
    assert table.data.persisted_offset(CHANGELOG) == 12
