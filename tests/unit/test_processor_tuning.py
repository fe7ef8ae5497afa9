"""The processor's tuning of Faust: small RocksDB memory per partition.

Each table partition's RocksDB keeps small memtables and a small block cache. With
Faust's defaults (three 64 MB memtables and a 2 GB block cache per partition) an idle
agent's record stays in memory until 64 MB have filled. Read back from what RocksDB
itself wrote (its OPTIONS file), so the test fails if Faust stops passing them on.
"""

from __future__ import annotations

from pathlib import Path

from agentstream.streams.broker import BrokerProfile
from agentstream.streams.processor.app import create_processor, rocksdb_options
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


def test_each_call_gives_a_fresh_dict() -> None:
    first = rocksdb_options()
    first.pop("write_buffer_size")  # what Faust's store does with the dict it is given
    assert "write_buffer_size" in rocksdb_options()

