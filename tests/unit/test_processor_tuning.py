"""The processor's tuning of Faust: small RocksDB memory per partition, a bounded info log,
fetch rounds of at most 0.1 s, committed offsets in one request.

Each table partition's RocksDB keeps small memtables and a small block cache. With
Faust's defaults (three 64 MB memtables and a 2 GB block cache per partition) an idle
agent's record stays in memory until 64 MB have filled. Read back from what RocksDB
itself wrote (its OPTIONS file), so the test fails if Faust stops passing them on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faust.types import TP

from agentstream.streams.broker import BrokerProfile
from agentstream.streams.broker.profile import REAL_KAFKA_FETCH_MAX_WAIT_MS
from agentstream.streams.processor.app import PartitionOptions, create_processor, rocksdb_options
from agentstream.streams.processor import committed_fix
from agentstream.streams.processor.fetch_fix import FETCH_WAIT_S
from agentstream.streams.settings import Settings


def rocksdb_setting(db_dir: Path, name: str) -> str:
    """`name`'s value in the newest OPTIONS file RocksDB wrote into `db_dir`."""
    newest = max(db_dir.glob("OPTIONS-*"), key=lambda path: int(path.name.split("-")[1]))
    for line in newest.read_text().splitlines():
        key, _, value = line.strip().partition("=")
        if key == name:
            return value
    raise AssertionError(f"{name} not in {newest}")


async def test_a_table_partition_opens_with_small_memtables_and_block_cache(tmp_path: Path) -> None:
    processor = create_processor(Settings(data_dir=tmp_path, app_id="rocks"), BrokerProfile.real_kafka(), 4,
                                 http_port=6099)
    store = processor.table.data
    store._db_for_partition(0)  # type: ignore[attr-defined]  # opens the partition's RocksDB
    db_dir = next(tmp_path.glob("**/agents-0.db"))
    assert rocksdb_setting(db_dir, "write_buffer_size") == str(4 << 20)
    assert rocksdb_setting(db_dir, "max_write_buffer_number") == "2"
    assert store.rocksdb_options.block_cache_size == 16 << 20  # type: ignore[attr-defined]  # not in OPTIONS


async def test_a_table_partition_keeps_a_bounded_info_log_across_restarts_and_writes(tmp_path: Path) -> None:
    processor = create_processor(Settings(data_dir=tmp_path, app_id="logs"), BrokerProfile.real_kafka(), 4,
                                 http_port=6099)
    store = processor.table.data
    options = store.rocksdb_options  # type: ignore[attr-defined]
    assert isinstance(options, PartitionOptions)
    store._db_for_partition(0)  # type: ignore[attr-defined]
    db_dir = next(tmp_path.glob("**/agents-0.db"))
    assert rocksdb_setting(db_dir, "max_log_file_size") == str(PartitionOptions.info_log_bytes) == str(1 << 20)
    assert rocksdb_setting(db_dir, "keep_log_file_num") == str(PartitionOptions.info_log_files) == "3"
    # Every open rolls the log, and so does a full one: small ones here, so that ten restarts
    # with writes between them roll it many times over (another folder: the store holds its lock).
    options.info_log_bytes = 16 << 10
    restarted = tmp_path / "restarted.db"
    for restart in range(10):
        db = options.open(restarted)
        for i in range(50):
            db[f"agent-{i}".encode()] = bytes(20_000)
        db.close()
    logs = sorted(restarted.glob("LOG*"))
    assert len(logs) == 3, [path.name for path in logs]
    assert max(path.stat().st_size for path in logs) < 64 << 10


def test_each_call_gives_a_fresh_dict() -> None:
    first = rocksdb_options()
    first.pop("write_buffer_size")  # what Faust's store does with the dict it is given
    assert "write_buffer_size" in rocksdb_options()


async def test_a_processor_on_a_real_kafka_fetches_with_a_short_max_wait(tmp_path: Path) -> None:
    # A partition left out of a waiting fetch waits for it to end (profile.py): Faust's 1.5 s
    # made 1% of W2b's invocations on Apache Kafka take 1.7 s.
    processor = create_processor(Settings(data_dir=tmp_path, app_id="fetch"), BrokerProfile.real_kafka(), 4,
                                 http_port=6099)
    thread = processor.app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(processor.app.transport)  # what Faust starts: not connected yet
    try:
        assert consumer._fetch_max_wait_ms == REAL_KAFKA_FETCH_MAX_WAIT_MS == 100
        assert BrokerProfile.real_kafka().consumer_options()["fetch_max_wait_ms"] == 100  # workers, clients
    finally:
        await consumer.stop()


async def test_a_fetch_round_waits_at_most_a_tenth_of_a_second_for_records(tmp_path: Path) -> None:
    # Faust's fetch loop asks for a second; partitions resumed during that wait (the inputs, after a
    # restart's recovery) waited out the rest of it (fetch_fix.py). Recorded where Faust hands the
    # wait to its consumer thread, the one part not run here: it needs a broker.
    processor = create_processor(Settings(data_dir=tmp_path, app_id="fetch-round"), BrokerProfile.real_kafka(), 4,
                                 http_port=6099)
    consumer: Any = processor.app.consumer
    consumer._active_partitions = {TP("fetch-round.agent-events", 0)}
    waits: list[float] = []

    async def fetch(active_partitions: Any, timeout: float) -> dict[Any, Any]:
        waits.append(timeout)
        return {}

    consumer._getmany = fetch
    async for _ in consumer.getmany(timeout=1.0):  # what Faust's fetch loop asks for
        raise AssertionError("no records were fetched")
    assert waits == [FETCH_WAIT_S] == [0.1]


async def test_faust_seeks_to_the_committed_offsets_with_one_request(tmp_path: Path, monkeypatch: Any) -> None:
    # aiokafka's seek asks about one partition at a time (committed_fix.py); Faust calls it in its
    # consumer thread, the one part not run here (tests/integration/test_committed_offsets.py runs it).
    processor = create_processor(Settings(data_dir=tmp_path, app_id="seek"), BrokerProfile.real_kafka(), 4,
                                 http_port=6099)
    thread: Any = processor.app.consumer._thread  # type: ignore[attr-defined]
    called: list[tuple[Any, tuple[Any, ...]]] = []

    async def call_thread(fun: Any, *args: Any) -> dict[Any, Any]:
        called.append((fun, args))
        return {}

    monkeypatch.setattr(thread, "call_thread", call_thread)
    monkeypatch.setattr(thread, "_ensure_consumer", lambda: "its aiokafka consumer")
    await thread.seek_to_committed()
    assert called == [(committed_fix.seek_all_to_committed, ("its aiokafka consumer",))]
