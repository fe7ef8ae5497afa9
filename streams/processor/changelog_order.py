"""A table key never goes back to an older changelog record, whatever order Faust reads them in.

Faust's recovery applies changelog records in the order its loop receives them and
filters them only by the last offset it saw per partition. That offset is reset on a
rebalance (to the persisted offset, which trails what is buffered) while records fetched
before the reset still wait in its queue, so a partition is at times read out of offset
order: later records first, earlier ones after. Applied as read, the earlier record of
an agent then overwrites its later one, and the persisted offset says the table is up to
date. The 500-kill chaos runs caught exactly that, each time right after a processor
started on an empty data dir and read the partition as a standby: an agent restored one
turn old.

A per-partition floor does not fix it (it turns the late-first reads into skipped early
records of *other* agents). The rule has to be per key: this process remembers, per
changelog partition and key, the offset of the newest record it applied or wrote, and a
record at a lower offset for that key is dropped before it reaches RocksDB. Offsets only
grow within a topic's life, so the newest record always wins, and records of keys not yet
seen are applied whatever their position. Costs: one small int per agent the process has
read or written (a dict entry, about 100 bytes), and nothing on the hot path of turns.

The very record already seen (same key, same offset) is applied again, not dropped. It is
what the table holds, or should: a write acknowledged after a rebalance took its
partition (publish.py leaves it to the changelog) is not in RocksDB, and dropping it on
the way back kept the agent a turn old. And applying it lets Faust move the persisted
offset over it: the writes the recovery flushes before it reads the changelog are
acknowledged while the restore point knows nothing (restore_point.py), so dropping them
left the offset behind them and froze the restore point until the next rebalance.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("agentstream.processor")


class ChangelogOrder:
    """Drops changelog records older than what the table already holds for their key."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._newest: dict[Any, dict[bytes, int]] = {}  # changelog partition -> key -> offset
        self.dropped = 0  # records dropped so far, for tests and logs

    def install(self) -> None:
        """Filter every batch Faust's recovery applies, and learn this process's own acknowledged writes.

        Install it after anything else that takes over `_on_changelog_sent` (the restore point):
        the acknowledgement is recorded here, then handed on.
        """
        table = self._table
        original_apply = table.apply_changelog_batch
        original_sent = table._on_changelog_sent

        def apply_changelog_batch(batch: Iterable[Any]) -> None:
            original_apply(self.newer(batch))

        def on_changelog_sent(fut: Any) -> None:
            self.on_sent(fut)
            original_sent(fut)

        table.apply_changelog_batch = apply_changelog_batch  # what Faust's recovery calls per buffer
        table._on_changelog_sent = on_changelog_sent  # the callback `send_changelog` attaches to each write

    def newer(self, batch: Iterable[Any]) -> list[Any]:
        """The events of `batch` that are newer than anything applied or written for their key."""
        kept: list[Any] = []
        dropped: dict[Any, list[int]] = {}  # partition -> offsets dropped in this batch
        for event in batch:
            message = event.message
            if self._seen(message.tp, message.key, message.offset):
                dropped.setdefault(message.tp, []).append(message.offset)
            else:
                kept.append(event)
        for tp, offsets in dropped.items():
            self.dropped += len(offsets)
            log.info("changelog records older than what the table holds for their keys were dropped",
                     extra={"topic": tp.topic, "partition": tp.partition, "dropped": len(offsets),
                            "lowest": min(offsets), "dropped_total": self.dropped})
        return kept

    def on_sent(self, fut: Any) -> None:
        """An acknowledged changelog write of this process is the newest record of its key so far."""
        try:
            sent = fut.result()
        except Exception:  # a failed write records nothing; the writer retries it
            return
        self._seen(sent.topic_partition, fut.message.key, sent.offset)

    def _seen(self, tp: Any, key: bytes, offset: int) -> bool:
        """Record `offset` for `key` unless a newer record was seen: then True (the same one is not newer)."""
        keys = self._newest.setdefault(tp, {})
        known = keys.get(key)
        if known is not None and known > offset:
            return True
        keys[key] = offset
        return False
