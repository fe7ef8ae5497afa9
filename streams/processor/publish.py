"""The processor's store and publisher over Faust: the two things an input waits for.

`FaustTableStore.put` writes the agent's record to RocksDB and to the table's changelog
and returns the changelog write's acknowledgement, which the input waits for. Faust's own commit
path flushes its producer buffer for at most 100 ms without progress, so relying on it
could commit an input's offset before its record reached the changelog (and a new owner
of the partition would then lose the turn).

`FaustPublisher.publish` refuses what can never be delivered — a topic that does not
exist, a record larger than a message may be — with `UndeliverableError`, instead of
letting the producer wait for metadata that will never come.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from .exceptions import UndeliverableError

log = logging.getLogger("agentstream.processor")


class FaustTableStore:
    """`RecordStore` over a Faust table: RocksDB at once, the changelog acknowledged."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: bytes) -> bytes | None:
        return self._table.get(key)  # type: ignore[no-any-return]

    def put(self, key: bytes, value: bytes) -> Any:
        """Write to RocksDB now; the returned future resolves when the changelog write is acknowledged."""
        table = self._table
        # What `table[key] = value` does, keeping the changelog future to wait on it.
        sent = table.send_changelog(table.partition_for_key(key), key, value)
        table.data[key] = value
        return sent


class FaustPublisher:
    """`Publisher` through the Faust producer; `publish` returns the broker's acknowledgement."""

    def __init__(self, app: faust.App, *, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes
        self._topics: dict[str, Any] = {}
        self._known: set[str] = set()

    async def publish(self, topic: str, key: bytes | None, value: bytes) -> Any:
        if len(value) > self._max_bytes:
            raise UndeliverableError(
                f"a record for {topic} is {len(value)} bytes, over the {self._max_bytes} bytes one message may have "
                "(AGENTSTREAM_MAX_RECORD_BYTES); keep large data out of step inputs, results and events"
            )
        if topic not in self._known:
            await self._check_exists(topic)
        if topic not in self._topics:
            self._topics[topic] = self._app.topic(topic, key_type=bytes, value_type=bytes)
        return await self._topics[topic].send(key=key, value=value)  # a future: acked by the broker

    async def _check_exists(self, topic: str) -> None:
        """Ask the cluster which topics exist (without auto-creating any)."""
        producer = self._app.producer._ensure_producer()  # type: ignore[attr-defined]
        metadata = await producer.client.fetch_all_metadata()
        self._known |= set(metadata.topics())
        if topic not in self._known:
            queue_hint = ""
            prefix, _, queue = topic.rpartition("step-commands.")
            if prefix or queue != topic:
                queue_hint = f" (`agentstream topics create --task-queue {queue}`)"
            raise UndeliverableError(
                f"topic {topic} does not exist: create it{queue_hint} and restart the processors; "
                "the agent waits, parked, with its outputs kept"
            )
