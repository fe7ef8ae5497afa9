"""The restore audit (`AGENTSTREAM_VERIFY_RESTORE`) finds a local table older than its changelog.

Faust trusts local RocksDB up to its persisted offset: a table partition that holds an
agent's older record (what the chaos harness once found after hundreds of kills) is
served and built on as it is. The audit reads the owned changelog partitions after each
restore, logs every difference and repairs it. The test plants such a stale record by
hand (the processor stopped), shows that a plain restart serves it, then that an audited
restart reports and repairs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import rocksdict

from agentstream.streams.processor.restore_check import MISMATCH_MESSAGE
from agentstream.streams.processor.statedir import local_partitions, persisted_offset

from support import Cluster, poll
from test_statedir import changelog_records, log_entries, notes_of, run_until_agents_hold

pytestmark = pytest.mark.integration


def local_records(data_dir: Path) -> dict[bytes, tuple[int, bytes]]:
    """Every agent's record in the local tables, with its partition."""
    found: dict[bytes, tuple[int, bytes]] = {}
    for partition, path in local_partitions(data_dir).items():
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())
        try:
            for key, value in db.items():
                if not bytes(key).startswith(b"__faust"):
                    found[bytes(key)] = (partition, bytes(value))
        finally:
            db.close()
    return found


def plant(data_dir: Path, partition: int, key: bytes, value: bytes) -> None:
    db = rocksdict.Rdict(str(local_partitions(data_dir)[partition]), options=rocksdict.Options(raw_mode=True))
    try:
        db[key] = value
    finally:
        db.close()


async def test_an_audited_restore_reports_and_repairs_a_stale_local_record(cluster: Cluster) -> None:
    data_dir = cluster.tmp / "audited-state"
    agents = [f"audit-{i}" for i in range(8)]
    first = cluster.processor("first", data_dir=data_dir).start()
    first.wait_ready()
    await run_until_agents_hold(cluster, first, agents, [1], [1])
    first.stop()
    older = local_records(data_dir)

    second = cluster.processor("second", data_dir=data_dir).start()
    second.wait_ready()
    await run_until_agents_hold(cluster, second, agents, [2], [1, 2])
    second.stop()

    # Stale records for every agent but the one whose record sits at its partition's persisted
    # offset (the start-up check compares that one and would set the whole folder aside).
    records = await changelog_records(cluster)
    checked = {p: persisted_offset(path) for p, path in local_partitions(data_dir).items()}
    skip = {key for p, held in checked.items() for offset, key, _ in records[p] if offset == held}
    planted = [key for key in older if key not in skip]
    assert planted, "some agent must share a partition with a later-written one"
    for key in planted:
        partition, value = older[key]
        plant(data_dir, partition, key, value)
    victim = planted[0].decode()

    plain = cluster.processor("plain", data_dir=data_dir).start()
    plain.wait_ready()
    assert notes_of(plain.url, victim) == [1], "without the audit the stale local record is served as it is"
    plain.stop()

    audited = cluster.processor("audited", data_dir=data_dir, env={"AGENTSTREAM_VERIFY_RESTORE": "1"}).start()
    audited.wait_ready()
    await poll(lambda: all(notes_of(audited.url, a) == [1, 2] for a in agents), timeout=30,
               what="every agent as its changelog has it")
    found = {entry["agent_id"]: entry for entry in log_entries(audited, MISMATCH_MESSAGE)}
    assert set(found) == {key.decode() for key in planted}
    entry = found[victim]
    assert entry["level"] == "error"
    assert entry["verdict"] == "behind"
    assert entry["table"]["inputs_applied"] < entry["changelog"]["inputs_applied"]
