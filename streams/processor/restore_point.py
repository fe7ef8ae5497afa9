"""Where a restart resumes reading the changelog: only past what the local table surely holds.

Faust stores, per table partition, the last changelog offset the local RocksDB reflects
(its "persisted offset"); a restart reads the changelog from there. Faust moves that
offset on every acknowledged changelog write of this process. That is only right while
this process is the partition's sole writer: when another processor wrote to the
partition in between (it took the partition over while this one was frozen, partitioned
away or still finishing an input during a rebalance), an acknowledgement of this
process's later write declares the other processor's records applied here although the
local table never saw them. The next time this process restores the partition it starts
after them, and those agents come back as they were some turns ago.

So the offset moves only over a gap-free run of this process's own writes, starting from
a point the table is known to reflect: the end of the last restore. A write whose offset
does not follow on (another writer's records lie in between) freezes the partition's
restore point until the next restore; reading some records again then costs time, never
correctness, because the changelog is replayed in order.

Reading a partition as a standby never moves it either. Faust's standby reading can leave
holes: records fetched but dropped before its recovery loop read them (a pause, a flow
stop or a new generation cuts a fetched batch) are not fetched again unless a seek
follows, the records after them are applied, and the persisted offset moves over the
hole. When the partition is promoted to active, Faust restores it from that offset and
the agents of the hole come back older or not at all: the 100-kill chaos runs with
`--verify-restore` caught it, always on a partition that had just gone from standby to
active. So standby reads still fill RocksDB (most records are there at a promotion), but
a promotion reads the changelog again from the last point this process reflected as the
partition's owner (or from the start): holes are filled, records read twice are applied
in order again, and `ChangelogOrder` keeps a newer record of a key from being overwritten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("agentstream.processor")

@dataclass
class _Partition:
    held: int  # the changelog offset the local table is known to reflect
    frozen: bool = False  # another writer's record lies between ours: no more moves until a restore


class RestorePoint:
    """Moves a table's persisted offsets only over this process's own, gap-free writes."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._partitions: dict[Any, _Partition] = {}

    def install(self) -> None:
        """Take over the table's changelog acknowledgements and learn of every rebalance and restore."""
        table = self._table
        original_rebalance = table.on_rebalance

        async def on_rebalance(*args: Any, **kwargs: Any) -> None:
            self.forget()
            await original_rebalance(*args, **kwargs)

        table.on_rebalance = on_rebalance  # what the table manager calls with every new assignment
        table._on_changelog_sent = self.on_sent  # the callback `send_changelog` attaches to each write
        table.on_recover(self.on_restored)
        store = table.data
        persist = store.set_persisted_offset

        def set_persisted_offset(tp: Any, offset: int) -> None:
            if not self.read_as_standby(tp):
                persist(tp, offset)

        store.set_persisted_offset = set_persisted_offset  # what the store's changelog batches call

    def read_as_standby(self, tp: Any) -> bool:
        """True while this process reads the changelog partition `tp` only as a standby."""
        recovery = self._table.app.tables.recovery
        return tp in recovery.standby_tps and tp not in recovery.active_tps

    def forget(self) -> None:
        """A new assignment: nothing is known until its restore completes."""
        self._partitions.clear()

    async def on_restored(self) -> None:
        """Each active partition's table now reflects the changelog up to its persisted offset."""
        recovery = self._table.app.tables.recovery
        for tp in recovery.actives_for_table.get(self._table, ()):
            held = self._table.data.persisted_offset(tp)
            if held is None and recovery.active_highwaters.get(tp) == -1:
                held = -1  # an empty changelog partition: our first write is offset 0
            if held is None:
                log.info("no restore point for a changelog partition; a restart reads it from the start",
                         extra={"topic": tp.topic, "partition": tp.partition})
                continue
            self._partitions[tp] = _Partition(held)

    def on_sent(self, fut: Any) -> None:
        """An acknowledged changelog write of this process: move the restore point if it follows on."""
        try:
            sent = fut.result()
        except Exception:  # a failed write moves nothing; the writer retries it
            return
        self.acknowledged(sent.topic_partition, sent.offset)

    def acknowledged(self, tp: Any, offset: int) -> None:
        state = self._partitions.get(tp)
        if state is None or state.frozen or offset <= state.held:
            return
        if offset != state.held + 1:  # acknowledgements of one partition come in order: a gap is not ours
            state.frozen = True
            log.warning("another writer's records are in a changelog partition this process writes; its restore "
                        "point stays where it is until the next restore",
                        extra={"topic": tp.topic, "partition": tp.partition, "restore_point": state.held,
                               "next_own_offset": offset})
            return
        state.held = offset
        self._table.data.set_persisted_offset(tp, offset)

    def held(self, tp: Any) -> int | None:
        state = self._partitions.get(tp)
        return None if state is None else state.held
