"""Guards for Faust's changelog recovery: never seek below offset 0 (a processor crashed starting on it
once), and never drop changelog records fetched but not yet read (restores came out behind)."""

from __future__ import annotations

import inspect
from collections import Counter
from typing import Any

import faust
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


async def test_a_partition_without_a_start_offset_is_read_from_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # A standby partition added after Faust computed the start offsets keeps the None that
    # `Recovery._add` records for "nothing persisted"; Faust's standby seek passes it on.
    monkeypatch.setattr(Recovery, "_seek_offsets", inspect.unwrap(Recovery._seek_offsets))
    late, known = TP("changelog", 2), TP("changelog", 3)
    offsets: Counter[Any] = Counter({known: 7})
    offsets.setdefault(late, None)  # type: ignore[arg-type]  # exactly what Recovery._add does
    consumer = Consumer()
    with pytest.raises((ValueError, TypeError)):  # Faust alone crashes
        await Recovery._seek_offsets(object(), consumer, {late, known}, Counter(offsets), "standby")  # type: ignore[arg-type]
    recovery_fix.install()
    await Recovery._seek_offsets(object(), consumer, {late, known}, offsets, "standby")  # type: ignore[arg-type]
    assert consumer.seeks == [{late: 0, known: 7}]


def test_changelog_records_fetched_but_not_read_survive_a_flow_resume(tmp_path: Any) -> None:
    """Faust empties its changelog queue when flow control resumes, which it does at the end of
    every recovery, after standby partitions started fetching: those records were then lost
    (the consumer's position is past them) and the chaos runs restored tables behind their
    changelog. With the guard, the queue keeps them for recovery to read."""
    def fetched_then_resumed(app: faust.App) -> int:
        queue = app.tables.changelog_queue
        for offset in (157, 158, 159):
            queue.put_nowait(offset)  # what the fetcher does with standby records
        app.flow_control.resume()  # what `Recovery.on_recovery_completed` does next
        return queue.qsize()

    assert fetched_then_resumed(faust.App("faust-alone", datadir=str(tmp_path / "a"))) == 0  # Faust alone drops them
    app = faust.App("guarded", datadir=str(tmp_path / "b"))
    recovery_fix.keep_fetched_changelog_records(app)
    assert fetched_then_resumed(app) == 3
