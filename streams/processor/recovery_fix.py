"""Two guards for Faust's table recovery.

Never seek a changelog partition to a negative offset. Faust computes where to start reading a changelog as "persisted offset, else earliest
offset - 1" and maps exactly -1 to 0; anything lower reaches aiokafka's `seek`, which
raises, and the whole processor crashes while starting. It was seen once in a
500-kill chaos run: a restart on a state dir that had just been set aside (so no
persisted offset) crashed seeking a standby partition. Reading from offset 0 is
always correct for a changelog (it is what an empty table needs), so lower values are
read as 0.

Never apply a changelog record to a partition this process is not restoring. Faust's
recovery loop hands every record its changelog consumer returns to the store: a record
of a partition that is neither active nor standby any more (its `else` branch only logs
a warning and falls through), and records still buffered for an active partition whose
recovery has ended. The first overwrites a partition this process may own by now, the
second its own newer writes; either way RocksDB then holds an older record than the
changelog while the persisted offset says it is up to date, and the next restart
starts from that record: a turn lost. A 500-kill chaos run lost one event like this
(an agent's revision 23 at changelog offset 1640 replaced by the record at 1636). Only
standby partitions, and active ones while they are restored, take changelog records.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from faust.stores.rocksdb import Store
from faust.tables.recovery import Recovery

log = logging.getLogger("agentstream.processor")

_MARK = "agentstream_never_negative"


def install() -> None:
    """Patch `Recovery._seek_offsets` and `Store.apply_changelog_batch` once per process."""
    _guard_seek()
    _guard_apply()


def _guard_seek() -> None:
    original = Recovery._seek_offsets
    if getattr(original, _MARK, False):
        return

    async def seek_offsets(self: Recovery, consumer: Any, tps: Any, offsets: Counter[Any], title: str) -> None:
        for tp in tps:
            offset = offsets.get(tp)
            if offset is not None and offset < -1:
                log.warning("changelog recovery asked to seek below the start; reading from offset 0 instead",
                            extra={"topic": tp.topic, "partition": tp.partition, "offset": offset, "kind": title})
                offsets[tp] = -1  # Faust reads -1 as "from the start"
        await original(self, consumer, tps, offsets, title)

    setattr(seek_offsets, _MARK, True)
    seek_offsets.__wrapped__ = original  # type: ignore[attr-defined]  # what inspect.unwrap finds
    Recovery._seek_offsets = seek_offsets  # type: ignore[method-assign]


def restoring(recovery: Any, tp: Any) -> bool:
    """Whether changelog records of `tp` belong in the local store now."""
    return tp in recovery.standby_tps or (tp in recovery.active_tps and bool(recovery.in_recovery))


def _guard_apply() -> None:
    original = Store.apply_changelog_batch
    if getattr(original, _MARK, False):
        return

    def apply_changelog_batch(self: Store, batch: Any, to_key: Any, to_value: Any) -> None:
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]
        events = list(batch)
        kept = [event for event in events if restoring(recovery, event.message.tp)]
        if len(kept) < len(events):
            skipped = Counter(f"{e.message.tp.topic}#{e.message.tp.partition}" for e in events
                              if not restoring(recovery, e.message.tp))
            log.warning("changelog records of partitions this process does not restore were not applied",
                        extra={"skipped": dict(skipped)})
        if kept:
            original(self, kept, to_key, to_value)

    setattr(apply_changelog_batch, _MARK, True)
    apply_changelog_batch.__wrapped__ = original  # type: ignore[attr-defined]
    Store.apply_changelog_batch = apply_changelog_batch  # type: ignore[method-assign]
