"""Check a processor's data dir before Faust opens it: local state must belong to this run.

Faust keeps each table partition in `<data_dir>/v1/tables/agents-<N>.db` (RocksDB) with
the last changelog offset it holds under a special key. Nothing in that layout says which
app, Kafka cluster or incarnation of the changelog topic the state came from, so a folder
holding another app's tables, or our own from before the topics were recreated (every
restart of the in-memory embedded broker does that), crashes table recovery with
`ConsistencyError` and the processor never becomes ready; worse, a stale partition whose
offset happens to be below the new topic's end would silently mix two histories.

So before Faust starts we compare the folder with what this processor is about to run:

- a marker file (`agentstream-state.json`: format, app ID, cluster ID, topic prefix)
  written on every start names the app, cluster and topics the tables were built for;
- each local partition's persisted changelog offset must lie below the end offset of that
  changelog partition on the broker; an offset at or past the end means the topic was
  recreated since;
- and the local table's value for the key of the changelog record at that offset must be
  that record or one of the key's later records: a topic recreated and refilled past the
  old offset has another record there. A later one is allowed because RocksDB may run
  ahead of the persisted offset: a record goes into RocksDB when the changelog
  acknowledges it, and the offset moves just after (a SIGKILL in between leaves it one
  record behind) or not at all while the restore point holds it back (restore_point.py).
  Faust's restore then reads those records again, in order. (A record compacted away
  since also fails this test; the only cost of that is a rebuild from the changelog.)

On any mismatch the Faust folders are *moved* to `<data_dir>/stale-<UTC time>/` rather
than deleted: when the old broker is gone (an embedded broker keeps its topics in memory)
those tables may be the last copy of its agents, and a wrong verdict must be undoable.
Only the newest few are kept, so repeated restarts cannot fill the disk. Faust then
restores the tables from the changelog as for any new processor. A folder that cannot be
written at all is refused with a message naming it and the fix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agentstream.topics.exceptions import ConfigurationError

from ..kafka import describe_cluster_id, partition_counts, unreachable
from ..security import kafka_options
from ..settings import Settings
from .app import TABLE_NAME

log = logging.getLogger("agentstream")

MARKER_NAME = "agentstream-state.json"
MARKER_FORMAT = 1
STALE_PREFIX = "stale-"
KEEP_STALE = 3
FAUST_APPDIR = "v1"  # Faust keeps an app's data in `v<version>`; app.py leaves `version` at 1
OFFSET_KEY = b"__faust\0offset__"  # faust.stores.rocksdb.Store.offset_key
_FAUST_VERSION_DIR = re.compile(r"v\d+")

SET_ASIDE_MESSAGE = "local state set aside; it will be rebuilt from the changelog"
KEPT_MESSAGE = "local state kept"
NEW_MESSAGE = "local state starts empty"


@dataclass(frozen=True)
class StateIdentity:
    """What local tables are valid for: the marker file's content."""

    app_id: str
    cluster_id: str
    topic_prefix: str
    format: int = MARKER_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


@dataclass(frozen=True)
class StateDirCheck:
    """The verdict on a data dir: started empty, kept as it was, or set aside (and why)."""

    outcome: Literal["new", "kept", "set_aside"]
    partitions: int
    reason: str | None = None
    moved_to: Path | None = None


def changelog_topic(app_id: str) -> str:
    """The table's changelog as Faust names it: `<app id>-<table>-changelog`."""
    return f"{app_id}-{TABLE_NAME}-changelog"


def local_partitions(data_dir: Path) -> dict[int, Path]:
    """The table partition DBs Faust left in `data_dir`, by partition number."""
    found: dict[int, Path] = {}
    pattern = re.compile(rf"{re.escape(TABLE_NAME)}-(\d+)\.db")
    tables = data_dir / FAUST_APPDIR / "tables"
    if tables.is_dir():
        for path in tables.iterdir():
            match = pattern.fullmatch(path.name)
            if match and path.is_dir():
                found[int(match.group(1))] = path
    return found


def _read_only_get(db_path: Path, key: bytes) -> bytes | None:
    """`key` of a partition DB, opened read-only: no lock taken, nothing changed; raises if unreadable."""
    import rocksdict

    db = rocksdict.Rdict(
        str(db_path), options=rocksdict.Options(raw_mode=True), access_type=rocksdict.AccessType.read_only()
    )
    try:
        value = db.get(key)
    finally:
        db.close()
    return None if value is None else bytes(value)


def local_value(db_path: Path, key: bytes) -> bytes | None:
    """The value the local partition DB holds for `key`."""
    return _read_only_get(db_path, key)


@dataclass
class _Follow:
    """One partition while the changelog is read from its persisted offset."""

    start: int
    key: bytes | None = None  # the key of the record at `start`
    local: bytes | None = None  # what the local table holds for that key


async def unmatched_partitions(
    bootstrap: str, topic: str, offsets: Mapping[int, int], ends: Mapping[int, int], db_paths: Mapping[int, Path],
    timeout_s: float = 30.0, security: Mapping[str, Any] | None = None,
) -> set[int]:
    """The partitions whose local table does not continue the changelog from `offsets[partition]`.

    A partition continues it when the record at exactly its offset exists and the local
    value of that record's key is this record or a later record of the key. The changelog
    is read from each offset until that value turns up (usually at once, or one record
    later) or the partition's end; a partition not settled within `timeout_s` counts as
    unmatched, which costs a rebuild, never a wrong table.
    """
    follows = {p: _Follow(offset) for p, offset in offsets.items()}
    if not follows:
        return set()
    unmatched: set[int] = set()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                **(security or {}))
    try:
        await consumer.start()
        tps = {p: TopicPartition(topic, p) for p in follows}
        consumer.assign(list(tps.values()))
        for partition, follow in follows.items():
            consumer.seek(tps[partition], follow.start)
        waiting = set(follows)
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            batches = await consumer.getmany(*[tps[p] for p in waiting], timeout_ms=200, max_records=500)
            for tp, records in batches.items():
                partition, follow = tp.partition, follows[tp.partition]
                for record in records:
                    if partition not in waiting:
                        break
                    if follow.key is None:  # the record at the persisted offset names the key to follow
                        if record.offset != follow.start or record.key is None:
                            unmatched.add(partition)
                            waiting.discard(partition)
                            break
                        follow.key = record.key
                        follow.local = local_value(db_paths[partition], record.key)
                    if record.key == follow.key and record.value == follow.local:
                        waiting.discard(partition)
                    elif record.offset >= ends[partition] - 1:
                        unmatched.add(partition)
                        waiting.discard(partition)
            await asyncio.sleep(0)
    except (KafkaError, OSError) as exc:
        raise unreachable(bootstrap, exc) from exc
    finally:
        await consumer.stop()
    return unmatched | waiting


def persisted_offset(db_path: Path) -> int | None:
    """The last changelog offset Faust applied to this partition DB (None: it never wrote one)."""
    raw = _read_only_get(db_path, OFFSET_KEY)
    return None if raw is None else int(raw)


def read_marker(data_dir: Path) -> Mapping[str, Any] | str:
    """The marker's fields, or a sentence saying why there are none."""
    path = data_dir / MARKER_NAME
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        return f"there is no marker file {MARKER_NAME}, so the app, cluster and topics of the tables are unknown"
    except (OSError, ValueError) as exc:
        return f"the marker file {path} cannot be read ({exc})"
    if not isinstance(content, dict):
        return f"the marker file {path} holds no JSON object"
    return content


def identity_mismatch(marker: Mapping[str, Any], expected: StateIdentity) -> str | None:
    """Why tables described by `marker` do not belong to `expected` (None: they do)."""
    if marker.get("format") != expected.format:
        return f"the marker file has format {marker.get('format')!r}; this version writes {expected.format}"
    if marker.get("app_id") != expected.app_id:
        return f"the tables belong to app ID {marker.get('app_id')!r}, this processor is app ID {expected.app_id!r}"
    if marker.get("cluster_id") != expected.cluster_id:
        return (
            f"the tables come from Kafka cluster {marker.get('cluster_id')!r}, the broker is cluster "
            f"{expected.cluster_id!r} (a restarted embedded broker is a new cluster)"
        )
    if marker.get("topic_prefix") != expected.topic_prefix:
        return (
            f"the tables were built from topics prefixed {marker.get('topic_prefix')!r}, this processor "
            f"reads topics prefixed {expected.topic_prefix!r}"
        )
    return None


def offsets_mismatch(topic: str, persisted: Mapping[int, int | None], end_offsets: Mapping[int, int]) -> str | None:
    """Why the local partitions cannot continue the changelog `topic` (None: they can).

    A partition that holds offset N was built from a topic whose end is past N. An end at
    or below N means the topic was recreated (or truncated) since: one such partition
    condemns the whole folder, because the other partitions came from the same topic.
    """
    for partition, offset in sorted(persisted.items()):
        if offset is None:
            continue
        end = end_offsets.get(partition, 0)
        if offset >= end:
            return (
                f"changelog {topic} partition {partition} ends at offset {end} but the local table already "
                f"holds offset {offset}: the topic was recreated since these tables were written"
            )
    return None


async def changelog_end_offsets(
    bootstrap: str, topic: str, security: Mapping[str, Any] | None = None
) -> dict[int, int]:
    """End offset of every partition of `topic`; empty when the topic does not exist."""
    counts = await partition_counts(bootstrap, [topic], security)
    if topic not in counts:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                **(security or {}))
    try:
        await consumer.start()
        partitions = [TopicPartition(topic, p) for p in range(counts[topic])]
        # Assigned first, the topic is in the consumer's metadata: asked for the end offsets of a topic it
        # does not track, aiokafka waits out a metadata retry (100 ms of every restart's downtime, W3).
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
    except (KafkaError, OSError) as exc:
        raise unreachable(bootstrap, exc) from exc
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


def ensure_writable(data_dir: Path) -> None:
    """Create `data_dir` if needed and prove a file can be written there, or refuse clearly."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"the processor's data dir {data_dir} cannot be used ({exc}). Point AGENTSTREAM_DATA_DIR at a "
            "folder this process can create and write (in Kubernetes: mount a writable volume there), "
            "or fix the folder's owner and permissions."
        ) from exc


def set_aside(data_dir: Path) -> Path:
    """Move Faust's folders (`v<N>/`) into a new `stale-<UTC time>/`; keep the newest few of those."""
    while True:  # the names sort in time order, which is how the newest are found below
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = data_dir / f"{STALE_PREFIX}{stamp}"
        if not target.exists():
            break
    target.mkdir()
    for entry in data_dir.iterdir():
        if entry.is_dir() and _FAUST_VERSION_DIR.fullmatch(entry.name):
            entry.rename(target / entry.name)
    earlier = sorted(p for p in data_dir.iterdir() if p.is_dir() and p.name.startswith(STALE_PREFIX))
    for old in earlier[:-KEEP_STALE]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def write_marker(data_dir: Path, identity: StateIdentity) -> None:
    """Replace the marker atomically: a crash leaves the old marker or the new one, never half."""
    temporary = data_dir / f".{MARKER_NAME}.tmp"
    temporary.write_text(identity.to_json())
    os.replace(temporary, data_dir / MARKER_NAME)


async def prepare_state_dir(settings: Settings) -> StateDirCheck:
    """Keep, start or set aside `settings.data_dir` for this app, cluster and changelog; log the verdict.

    Call before the Faust app starts (Faust opens the partition DBs as soon as it is assigned).
    """
    data_dir = settings.data_dir
    ensure_writable(data_dir)
    security = kafka_options(settings)
    identity = StateIdentity(
        app_id=settings.app_id,
        cluster_id=await describe_cluster_id(settings.kafka_bootstrap, security),
        topic_prefix=settings.topic_prefix,
    )
    partitions = local_partitions(data_dir)
    reason = await _why_stale(settings.kafka_bootstrap, data_dir, identity, partitions, security)
    if reason is None:
        check = StateDirCheck("kept" if partitions else "new", len(partitions))
        log.info(KEPT_MESSAGE if partitions else NEW_MESSAGE,
                 extra={"data_dir": str(data_dir), "partitions": len(partitions), **asdict(identity)})
    else:
        moved_to = set_aside(data_dir)
        check = StateDirCheck("set_aside", len(partitions), reason, moved_to)
        log.warning(SET_ASIDE_MESSAGE, extra={
            "data_dir": str(data_dir), "moved_to": str(moved_to), "reason": reason, "partitions": len(partitions),
            **asdict(identity),
        })
    write_marker(data_dir, identity)
    return check


async def _why_stale(
    bootstrap: str, data_dir: Path, identity: StateIdentity, partitions: Mapping[int, Path],
    security: Mapping[str, Any] | None = None,
) -> str | None:
    has_faust_data = any(p.is_dir() and _FAUST_VERSION_DIR.fullmatch(p.name) for p in data_dir.iterdir())
    if not has_faust_data:
        return None
    marker = read_marker(data_dir)
    if isinstance(marker, str):
        return marker
    mismatch = identity_mismatch(marker, identity)
    if mismatch is not None or not partitions:
        return mismatch
    persisted: dict[int, int | None] = {}
    for partition, path in partitions.items():
        try:
            persisted[partition] = persisted_offset(path)
        except Exception as exc:  # rocksdict raises plain Exception for a corrupt or foreign DB
            return f"the local table {path} cannot be read ({exc})"
    topic = changelog_topic(identity.app_id)
    ends = await changelog_end_offsets(bootstrap, topic, security)
    mismatch = offsets_mismatch(topic, persisted, ends)
    if mismatch is not None:
        return mismatch
    known = {p: offset for p, offset in persisted.items() if offset is not None}
    unmatched = await unmatched_partitions(bootstrap, topic, known, ends, partitions, security=security)
    if unmatched:
        partition = min(unmatched)
        return (
            f"changelog {topic} partition {partition} holds another record at offset {known[partition]} (or later, "
            "for its key) than the local table: the topic was recreated (or compacted) since these tables were "
            "written"
        )
    return None
