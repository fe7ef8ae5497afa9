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


# -- changelog records are applied only to partitions this process is restoring --------------------------

def _changelog_event(tp: TP, offset: int, key: bytes, value: bytes) -> Any:
    from types import SimpleNamespace
    return SimpleNamespace(message=SimpleNamespace(tp=tp, partition=tp.partition, offset=offset, key=key, value=value))


@pytest.fixture
def agents_table(tmp_path: Any) -> Any:
    """A real Faust table on RocksDB, as the processor builds it (no broker needed to write to it)."""
    import faust
    app = faust.App("recovery-guard", store="rocksdb://", datadir=str(tmp_path), key_serializer="raw",
                    value_serializer="raw")
    return app.Table("agents", key_type=bytes, value_type=bytes, partitions=4)


def _apply(table: Any, *events: Any) -> None:
    table.data.apply_changelog_batch(list(events), None, None)


def test_a_late_changelog_record_never_overwrites_a_partition_this_process_owns(
        agents_table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Faust's recovery loop applies a record it fetched for a partition that is neither active nor standby
    # any more (its `else` branch only warns and falls through), and buffered records of a partition whose
    # recovery has ended. In a 500-kill chaos run a processor that had written an agent's newest record
    # (revision 23, changelog offset 1640) then had the older record (offset 1636) applied over it in
    # RocksDB, while the persisted offset moved on: after the next restart the agent had lost a turn.
    from faust.stores.rocksdb import Store
    monkeypatch.setattr(Store, "apply_changelog_batch", inspect.unwrap(Store.apply_changelog_batch))
    store, recovery = agents_table.data, agents_table.app.tables.recovery
    owned, other = TP("recovery-guard-agents-changelog", 3), TP("recovery-guard-agents-changelog", 1)
    db = store._db_for_partition(3)
    db[b"agent"] = b"revision 23"  # what the active owner wrote itself (its changelog write acknowledged)
    store.set_persisted_offset(owned, 1640)
    recovery.active_tps.add(owned)  # owned, and its recovery over (not in_recovery)

    _apply(agents_table, _changelog_event(owned, 1636, b"agent", b"revision 22"))
    assert db[b"agent"] == b"revision 22"  # Faust alone: the stale record wins

    db[b"agent"] = b"revision 23"
    store.set_persisted_offset(owned, 1640)
    recovery_fix.install()
    _apply(agents_table, _changelog_event(owned, 1636, b"agent", b"revision 22"))
    _apply(agents_table, _changelog_event(other, 9, b"elsewhere", b"x"))  # neither active nor standby here
    assert db[b"agent"] == b"revision 23"
    assert store.persisted_offset(owned) == 1640
    assert store._db_for_partition(1).get(b"elsewhere") is None


def test_records_of_partitions_being_restored_are_still_applied(agents_table: Any) -> None:
    recovery_fix.install()
    store, recovery = agents_table.data, agents_table.app.tables.recovery
    active, standby = TP("recovery-guard-agents-changelog", 0), TP("recovery-guard-agents-changelog", 2)
    recovery.active_tps.add(active)
    recovery.standby_tps.add(standby)
    recovery.in_recovery = True  # the active partition is being restored
    _apply(agents_table, _changelog_event(active, 5, b"a", b"restored"), _changelog_event(standby, 8, b"s", b"copy"))
    recovery.in_recovery = False  # standbys keep following the changelog after recovery
    _apply(agents_table, _changelog_event(standby, 9, b"s", b"newer copy"))
    assert store._db_for_partition(0)[b"a"] == b"restored" and store.persisted_offset(active) == 5
    assert store._db_for_partition(2)[b"s"] == b"newer copy" and store.persisted_offset(standby) == 9
