"""Two guards for Faust's table recovery.

Never seek a changelog partition to a negative offset.

Faust computes where to start reading a changelog as "persisted offset, else earliest
offset - 1" and maps exactly -1 to 0; anything lower reaches aiokafka's `seek`, which
raises, and the whole processor crashes while starting. It was seen once in a
500-kill chaos run: a restart on a state dir that had just been set aside (so no
persisted offset) crashed seeking a standby partition. Reading from offset 0 is
always correct for a changelog (it is what an empty table needs), so lower values are
read as 0.

Never apply a changelog record older than one the table already holds
(`in_offset_order`). Faust's recovery loop appends each record it reads to a buffer when
its offset is past the last one it saw, and applies the buffer in order. A rebalance
resets "the last one seen" to the table's persisted offset while records read after it
still wait in the buffer, so records read before the reset arrive a second time and
land in the buffer *after* newer ones of the same partition: applied in buffer order,
an agent's older record overwrites its newer one, while the persisted offset (the
highest offset in the batch) says the table is up to date. The chaos harness's restore
audit caught exactly this: an agent one turn old after a standby read its partition
from the start across rebalances. So within a batch offsets only go up, per partition,
and never below the persisted offset: a record skipped that way is one the table has
already applied, or a newer record of its key.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from faust.tables.recovery import Recovery

log = logging.getLogger("agentstream.processor")

_MARK = "agentstream_never_negative"


def in_offset_order(store: Any) -> None:
    """Make `store.apply_changelog_batch` skip records at or below an offset it already applied."""
    original = store.apply_changelog_batch

    def apply_changelog_batch(batch: Any, to_key: Any, to_value: Any) -> None:
        newest: dict[Any, int] = {}
        kept, skipped = [], Counter[str]()
        for event in batch:
            tp, offset = event.message.tp, event.message.offset
            if tp not in newest:
                persisted = store.persisted_offset(tp)
                newest[tp] = -1 if persisted is None else persisted
            if offset <= newest[tp]:
                skipped[f"{tp.topic}#{tp.partition}"] += 1
                continue
            newest[tp] = offset
            kept.append(event)
        if skipped:
            log.warning("changelog records read again after a rebalance were not applied over newer ones",
                        extra={"skipped": dict(skipped)})
        if kept:
            original(kept, to_key, to_value)

    store.apply_changelog_batch = apply_changelog_batch


def install() -> None:
    """Patch `Recovery._seek_offsets` once per process."""
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
