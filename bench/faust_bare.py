"""The bare-Faust baseline: the floor under agentstream's events/s on the same broker.

A minimal Faust app that counts records per key in a RocksDB-backed Table, with the
same Faust options and embedded-broker profile as agentstream's processor, so the
ratio measures what agentstream adds (decoding, the engine turn, the agent record,
exactly-once bookkeeping, agent-updates) and not a different Faust setup.

Run by the benchmark as a separate process; configured by BENCH_* variables:

    python bench/faust_bare.py worker
"""

from __future__ import annotations

import os
from typing import Any

import faust
from faust import web

from agentstream.streams.broker import BrokerProfile

BOOTSTRAP = os.environ["BENCH_BOOTSTRAP"]
TOPIC = os.environ["BENCH_TOPIC"]
PARTITIONS = int(os.environ["BENCH_PARTITIONS"])
PROFILE = BrokerProfile.embedded_broker() if os.environ.get("BENCH_EMBEDDED") == "1" else BrokerProfile.real_kafka()

PROFILE.apply_to_faust()
app = faust.App(
    os.environ["BENCH_APP_ID"],
    broker=[f"kafka://{host.strip()}" for host in BOOTSTRAP.split(",")],
    store="rocksdb://",
    datadir=os.environ["BENCH_DATA_DIR"],
    key_serializer="raw",
    value_serializer="raw",
    topic_partitions=PARTITIONS,
    consumer_auto_offset_reset="earliest",
    web_bind="127.0.0.1",
    web_port=int(os.environ["BENCH_HTTP_PORT"]),
    web_in_thread=False,
    **PROFILE.faust_options(),
)
PROFILE.apply_to_faust_app(app)  # an idempotent producer on a real broker, as the processor's
counts = app.Table("counts", key_type=bytes, value_type=bytes, partitions=PARTITIONS)
applied = 0


@app.agent(app.topic(TOPIC, key_type=bytes, value_type=bytes))
async def count(stream: faust.StreamT[bytes]) -> None:
    global applied
    async for event in stream.events():
        key = event.key
        counts[key] = str(int(counts.get(key, b"0")) + 1).encode()
        applied += 1


def is_ready() -> bool:
    """Same test as agentstream's processor: assigned, not rebalancing, tables restored."""
    try:
        consumer = app.consumer
    except Exception:
        return False
    recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
    return bool(
        not app.rebalancing and recovery.completed.is_set() and not recovery.in_recovery
        and consumer.assignment() is not None
    )


@app.page("/ready")
async def ready(self: web.View, request: web.Request) -> web.Response:
    return self.json({"ready": is_ready()}, status=200 if is_ready() else 503)


@app.page("/count")
async def applied_count(self: web.View, request: web.Request) -> web.Response:
    return self.json({"applied": applied})


if __name__ == "__main__":
    faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()
