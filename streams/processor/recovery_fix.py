"""Two guards for Faust's table recovery.

**Never seek a changelog partition to a negative offset** (`install`). Faust computes where
to start reading a changelog as "persisted offset, else earliest offset - 1" and maps
exactly -1 to 0; anything lower reaches aiokafka's `seek`, which raises, and the whole
processor crashes while starting. It was seen once in a
500-kill chaos run: a restart on a state dir that had just been set aside (so no
persisted offset) crashed seeking a standby partition. A second way in, seen in
another 500-kill run: a standby partition added during recovery (after Faust computed
its start offsets) keeps the `None` that `Recovery._add` records for "no persisted
offset", and the standby seek hands that `None` to aiokafka. Reading from offset 0 is
always correct for a changelog without a persisted offset (it is what an empty table
needs), so `None` and values below -1 are read as 0.

**Never drop changelog records fetched but not yet read** (`keep_fetched_changelog_records`).
Faust's recovery reads changelog records from a queue that the fetcher fills, and that
queue is emptied whenever flow control resumes. A resume comes at the end of every
recovery, after standby partitions were seeked and resumed, so the standby records
fetched in between are thrown away while the consumer's position is already past them:
nothing fetches them again, the records after them are applied, and the persisted
offset moves over the hole. The table then misses those records (an agent one turn old,
or absent) until something restores the partition from an earlier offset. A traced
100-kill chaos run saw a changelog record dropped that way; the restores "behind" their
changelog that the runs with `--verify-restore` found have that shape (restore_point.py
guards against the other way Faust's standby reading leaves holes).
The records are not stale when kept: each follows the one read before it from the same
partition, recovery still skips offsets it has seen, and `ChangelogOrder` drops a record
older than what the table holds for its key.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from faust.tables.recovery import Recovery

log = logging.getLogger("agentstream.processor")

_MARK = "agentstream_never_negative"


def keep_fetched_changelog_records(app: Any) -> None:
    """Give `app`'s table manager a changelog queue that flow control does not empty.

    Call it before the app starts (the manager creates its queue on first use)."""
    tables = app.tables
    if tables._changelog_queue is None:
        tables._changelog_queue = app.FlowControlQueue(maxsize=app.conf.stream_buffer_maxsize,
                                                       clear_on_resume=False)


def install() -> None:
    """Patch `Recovery._seek_offsets` once per process."""
    original = Recovery._seek_offsets
    if getattr(original, _MARK, False):
        return

    async def seek_offsets(self: Recovery, consumer: Any, tps: Any, offsets: Counter[Any], title: str) -> None:
        for tp in tps:
            offset = offsets.get(tp)
            if offset is None or offset < -1:
                log.warning("changelog recovery asked to seek below the start; reading from offset 0 instead",
                            extra={"topic": tp.topic, "partition": tp.partition, "offset": offset, "kind": title})
                offsets[tp] = -1  # Faust reads -1 as "from the start"
        await original(self, consumer, tps, offsets, title)

    setattr(seek_offsets, _MARK, True)
    seek_offsets.__wrapped__ = original  # type: ignore[attr-defined]  # what inspect.unwrap finds
    Recovery._seek_offsets = seek_offsets  # type: ignore[method-assign]
