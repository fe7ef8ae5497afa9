"""A table partition that lost records in a restore is repaired from its changelog on demand
(`RestoreCheck.repair`, which the processor runs when its inputs show such a hole): missing
and older records come back, a record ahead of the changelog stays. A real Faust table on
RocksDB, a real changelog topic on the session's broker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agentstream.streams.processor.restore_check import RestoreCheck

pytestmark = pytest.mark.integration

PARTITION = 1


def record(agent: str, applied: int, offset: int) -> bytes:
    return (f'{{"agent_id": "{agent}", "inputs_applied": {applied}, "revision": {applied}, '
            f'"delivery": {{"last_offsets": {{"in#1": {offset}}}}}, "updated_at": "2026-12-01T10:00:0{applied}"}}').encode()


async def test_a_partition_that_lost_records_gets_them_back_from_its_changelog(broker: str, tmp_path: Path) -> None:
    app_id = f"repair-{uuid.uuid4().hex[:8]}"
    app = faust.App(app_id, broker=f"kafka://{broker}", store="rocksdb://", datadir=str(tmp_path),
                    key_serializer="raw", value_serializer="raw")
    table: Any = app.Table("agents", key_type=bytes, value_type=bytes, partitions=4)
    changelog = table.changelog_topic.get_topic_name()
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(changelog, 4, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        for key, value in [(b"lost", record("lost", 1, 3)), (b"older", record("older", 1, 4)),
                           (b"older", record("older", 2, 7)), (b"ahead", record("ahead", 1, 5)),
                           (b"same", record("same", 1, 6))]:
            await producer.send_and_wait(changelog, key=key, value=value, partition=PARTITION)
    finally:
        await producer.stop()

    db = table.data._db_for_partition(PARTITION)
    db.put(b"older", record("older", 1, 4))  # the restore kept an old turn ...
    db.put(b"ahead", record("ahead", 2, 8))  # ... or the table is ahead (its write is still on its way)
    db.put(b"same", record("same", 1, 6))
    # and "lost" is missing altogether

    check = RestoreCheck(table, broker, {})
    assert sorted(await check.repair(PARTITION)) == [b"lost", b"older"]
    assert bytes(db.get(b"lost")) == record("lost", 1, 3)
    assert bytes(db.get(b"older")) == record("older", 2, 7)
    assert bytes(db.get(b"ahead")) == record("ahead", 2, 8)  # ahead: kept (the handler re-sends it)
    assert await check.repair(PARTITION) == []  # nothing left to repair
