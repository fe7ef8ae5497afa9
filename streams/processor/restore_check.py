"""An audit of every restore: does the local table hold what the changelog says? (opt-in)

After each restore, before inputs flow, every active partition of the changelog is read
from its start and the last record of each agent compared with the local table. A table
record *ahead* of the changelog is only noted: the store writes RocksDB once the changelog
has acknowledged a record (publish.py), so it should not occur, and where it did (before
that, after every crash under load) the input was not committed and the first input to
touch the agent writes the record again. A record *behind* (or beside) the
changelog means the restore lost or reordered writes: it is logged as an error with
everything known about it (both records' progress, the restore point, Faust's highwater)
and repaired from the changelog. It costs a full read of the owned partitions
per rebalance, so it is for tests and the chaos harness (`AGENTSTREAM_VERIFY_RESTORE=1`),
where the log line is the evidence.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("agentstream.processor")

READ_TIMEOUT_S = 60.0
MISMATCH_MESSAGE = "restored table differs from its changelog"
AHEAD_MESSAGE = "restored table holds a turn its changelog does not have yet"


def _progress(value: bytes | None) -> dict[str, Any]:
    """What says how far a record got: revision, inputs applied, input positions, last update."""
    try:
        record = json.loads(value) if value is not None else {}
    except ValueError:
        record = {}
    if not isinstance(record, dict):
        record = {}
    return {"revision": record.get("revision"), "inputs_applied": record.get("inputs_applied"),
            "last_offsets": (record.get("delivery") or {}).get("last_offsets") or {},
            "updated_at": record.get("updated_at")}


def compare(local: bytes | None, changelog: bytes | None) -> str:
    """`ahead`: the table holds a later turn than the changelog's last record (a crash came between the
    table write and its changelog acknowledgement; the first input to touch the agent writes it again);
    `behind`: the table misses turns the changelog has (a restore lost them); `diverged`: neither."""
    if local is None:
        return "behind"
    mine, theirs = _progress(local), _progress(changelog)
    sources = set(mine["last_offsets"]) | set(theirs["last_offsets"])
    deltas = {mine["last_offsets"].get(s, -1) - theirs["last_offsets"].get(s, -1) for s in sources}
    if deltas and max(deltas) > 0 and min(deltas) >= 0:
        return "ahead"
    if deltas and min(deltas) < 0 and max(deltas) <= 0:
        return "behind"
    if not deltas or deltas == {0}:
        if str(mine["updated_at"]) > str(theirs["updated_at"]):
            return "ahead"
        if str(mine["updated_at"]) < str(theirs["updated_at"]):
            return "behind"
    return "diverged"


LastValues = dict[bytes, tuple[int, bytes | None]]  # key -> (offset, value) of its last record


async def _last_values(bootstrap: str, tp: TopicPartition, options: dict[str, Any]) -> tuple[LastValues, int]:
    """The last (offset, value) of every key in one changelog partition, and its end offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **options)
    last: LastValues = {}
    await consumer.start()
    try:
        consumer.assign([tp])
        start = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, start)
        deadline = time.monotonic() + READ_TIMEOUT_S
        while start < end and time.monotonic() < deadline:  # the last record is never compacted away
            batches = await consumer.getmany(tp, timeout_ms=200)
            records = batches.get(tp, [])
            for record in records:
                if record.offset < end and record.key is not None:
                    last[record.key] = (record.offset, record.value)
            if records and records[-1].offset >= end - 1:
                break
        return last, end
    finally:
        await consumer.stop()


class RestoreCheck:
    """Compares each restored partition with its changelog; logs and repairs differences."""

    def __init__(self, table: Any, bootstrap: str, options: dict[str, Any]) -> None:
        self._table = table
        self._bootstrap = bootstrap
        self._options = options
        self.mismatches = 0

    def install(self) -> None:
        self._table.on_recover(self.check)

    async def check(self) -> None:
        table = self._table
        recovery = table.app.tables.recovery
        for tp in sorted(recovery.actives_for_table.get(table, ()), key=lambda tp: tp.partition):
            try:
                await self._reconcile(tp.topic, tp.partition, {
                    "highwater": recovery.active_highwaters.get(tp), "read_to": recovery.active_offsets.get(tp)})
            except Exception as exc:
                log.warning("restore check skipped", extra={"partition": tp.partition, "error": repr(exc)})

    async def repair(self, partition: int) -> list[bytes]:
        """Reconcile one owned partition with its changelog now; the keys repaired.

        The processor calls it when its inputs show that the table misses turns the group
        has committed (positions.py: the records reflect an offset below the committed one):
        a restore lost records then (seen once in CI: two agents of a partition absent after
        a rebalance, their later events dead-lettered as sent to no agent). Re-reading the
        inputs alone cannot bring back turns whose inputs lie before the committed offset.
        """
        return await self._reconcile(self._table.changelog_topic.get_topic_name(), partition, {})

    async def _reconcile(self, topic: str, partition: int, extra: dict[str, Any]) -> list[bytes]:
        table = self._table
        last, end = await _last_values(self._bootstrap, TopicPartition(topic, partition), self._options)
        db = table.data._db_for_partition(partition)
        restore_point = table.data.persisted_offset(TopicPartition(topic, partition))
        log.info("table checked against the changelog", extra={
            "partition": partition, "agents": len(last), "changelog_end": end, "restore_point": restore_point})
        repaired = []
        for key, (offset, value) in last.items():
            local = db.get(key)
            local = None if local is None else bytes(local)
            if local == value:
                continue
            verdict = compare(local, value)
            details = {
                "topic": topic, "partition": partition, "agent_id": key.decode(errors="replace"),
                "verdict": verdict, "changelog_offset": offset, "changelog": _progress(value),
                "table": _progress(local), "changelog_end": end, "restore_point": restore_point, **extra,
            }
            if verdict == "ahead":  # expected after a crash; the handler's first touch re-sends it
                log.info(AHEAD_MESSAGE, extra=details)
                continue
            self.mismatches += 1
            log.error(MISMATCH_MESSAGE, extra=details)
            if value is None:
                db.delete(key)
            else:
                db.put(key, value)
            repaired.append(key)
        return repaired
