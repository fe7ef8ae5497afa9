"""The processor's store and publisher over Faust: the two things an input waits for.

`FaustTableStore.put` sends the agent's record to the table's changelog and returns the
write's acknowledgement, which the input waits for. Faust's own commit path flushes its
producer buffer for at most 100 ms without progress, so relying on it could commit an
input's offset before its record reached the changelog (and a new owner of the partition
would then lose the turn).

RocksDB receives a record only once the changelog has acknowledged it, just before Faust
moves the partition's persisted offset past it (quix-streams' checkpoint order): until
then the record lives in memory, where the next input of the agent reads it. So the local
table never holds what the changelog does not: a processor killed with writes in flight
leaves a table that the state-dir check keeps and the changelog continues (at most its
persisted offset trails, which the check allows: statedir.py), and the HTTP state API
(which reads the table) never shows a turn that a crash could still take back.

`FaustPublisher.publish` refuses what can never be delivered — a topic that does not
exist, a record larger than a message may be — with `UndeliverableError`, instead of
letting the producer wait for metadata that will never come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

import faust

from .exceptions import UndeliverableError

log = logging.getLogger("agentstream.processor")

# How long a state read waits for the agent's record write in flight (`caught_up`); past it
# (a broker down), the read answers from what is durable.
READ_WAIT_S = 1.0


class StoredRecordsWatcher(Protocol):
    """Told when what RocksDB holds changes (the state API's views, views.py)."""

    def changed(self, key: bytes, value: bytes | None = None) -> None: ...  # a new record of `key` is in RocksDB

    def reset(self) -> None: ...  # a rebalance: partitions are restored from the changelog


class FaustTableStore:
    """`RecordStore` over a Faust table: written records in memory until the changelog acknowledges
    them, then in RocksDB."""

    def __init__(self, table: Any, watcher: StoredRecordsWatcher | None = None) -> None:
        self._table = table
        self._watcher = watcher
        # key -> (partition, latest value, its acknowledgement)
        self._unacknowledged: dict[bytes, tuple[int, bytes, Any]] = {}
        # Rebalances so far that took or gave each partition, and for each write on its way the
        # count of its partition when it was sent: a write from before a rebalance of its partition
        # is the changelog's to restore, never this process's to put (`acknowledged`). Weak: a failed
        # write is never acknowledged here, and its entry goes with its future.
        self._epochs: dict[int, int] = {}
        self._sent_in: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def install(self) -> None:
        """Take the table's changelog acknowledgements first (before the persisted offset moves)
        and learn of every rebalance. Install it after everything else that wraps them."""
        table = self._table
        original_sent = table._on_changelog_sent
        original_rebalance = table.on_rebalance

        def on_changelog_sent(fut: Any) -> None:
            self.acknowledged(fut)
            original_sent(fut)

        async def on_rebalance(assigned: Any, revoked: Any, newly_assigned: Any, *args: Any, **kwargs: Any) -> None:
            self.forget({tp.partition for tp in (*revoked, *newly_assigned)})
            if self._watcher is not None:
                self._watcher.reset()
            await original_rebalance(assigned, revoked, newly_assigned, *args, **kwargs)

        table._on_changelog_sent = on_changelog_sent  # the callback `send_changelog` attaches to each write
        table.on_rebalance = on_rebalance  # what the table manager calls with every new assignment

    def get(self, key: bytes) -> bytes | None:
        written = self._unacknowledged.get(key)
        return written[1] if written is not None else self._table.get(key)

    def values(self) -> Iterator[bytes]:
        """Every record of the owned partitions as `get` answers it: RocksDB's, with the writes
        still on their way to the changelog in place of what RocksDB holds for their agents.

        The timer service scans this after each rebalance. Scanning RocksDB alone missed the
        timers a turn had just armed while its write waited for the broker (slow when a
        broker has just died): nothing re-armed them when the write landed, and the agent
        waited for a fire that never came.
        """
        pending = {key: value for key, (_, value, _) in self._unacknowledged.items()}
        for key, value in self._table.items():
            written = pending.pop(key, None)
            yield written if written is not None else value
        yield from pending.values()  # agents new since: not in RocksDB yet

    def put(self, key: bytes, value: bytes) -> Any:
        """Send `value` to the changelog; `get` answers it at once, RocksDB has it once acknowledged."""
        table = self._table
        partition = table.partition_for_key(key)  # the partition of the input being handled
        sent = table.send_changelog(partition, key, value)
        self._unacknowledged[key] = (partition, value, sent)
        self._sent_in[sent] = self._epochs.get(partition, 0)
        return sent

    async def caught_up(self, key: bytes, timeout: float = READ_WAIT_S) -> None:
        """Wait (up to `timeout` s) until the latest write of `key` sent so far is in RocksDB.

        A turn's outputs go out once its record is written, without waiting for the changelog's
        acknowledgement, so a client may see an agent-update ("cancelled") before RocksDB, which
        the state API reads, holds that turn. A read waits for the write in flight first, and so
        never answers older than an output anyone may have seen. A write the broker refused, or
        one still unacknowledged after `timeout` (a broker down), leaves the read with what is
        durable: older, never a turn a crash could take back.
        """
        written = self._unacknowledged.get(key)
        if written is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(written[2]), timeout)

    def acknowledged(self, fut: Any) -> None:
        """A changelog write is on the broker: into RocksDB with it, before its offset is persisted."""
        epoch = self._sent_in.pop(fut, None)
        try:
            sent = fut.result()
        except Exception:  # a failed write stays in memory; the handler writes it again
            return
        key, value = fut.message.key, fut.message.value
        latest = self._unacknowledged.get(key)
        if latest is None or epoch != self._epochs.get(sent.topic_partition.partition, 0):
            # Sent before a rebalance took or gave its partition: the record reaches RocksDB from
            # the changelog like any other. Put now, an acknowledgement that comes late would
            # overwrite a newer record of the agent (from its owner in between) that recovery has
            # already applied, and that is all RocksDB would hold if this process died before its
            # own newer write (`latest`, when the partition came back) was acknowledged.
            return
        # What `table.data[key] = value` does, for the partition the write went to (there is no
        # current event in a callback to take it from).
        store = self._table.data
        store._db_for_partition(sent.topic_partition.partition).put(key, value)
        store._key_index[key] = sent.topic_partition.partition
        if self._watcher is not None:
            self._watcher.changed(key, value)
        if latest[1] == value:  # no later write of the agent is on its way
            del self._unacknowledged[key]

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked or about to be restored: their records come from RocksDB and the changelog."""
        for partition in partitions:
            self._epochs[partition] = self._epochs.get(partition, 0) + 1
        for key in [k for k, (p, _, _) in self._unacknowledged.items() if p in partitions]:
            del self._unacknowledged[key]


class FaustPublisher:
    """`Publisher` through the Faust producer; `publish` returns the broker's acknowledgement."""

    def __init__(self, app: faust.App, *, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes
        self._known: set[str] = set()

    async def publish(self, topic: str, key: bytes | None, value: bytes,
                      headers: list[tuple[str, bytes]] | None = None) -> Any:
        if len(value) > self._max_bytes:
            raise UndeliverableError(
                f"a record for {topic} is {len(value)} bytes, over the {self._max_bytes} bytes one message may have "
                "(AGENTSTREAM_MAX_RECORD_BYTES); keep large data out of step inputs, results and events"
            )
        if topic not in self._known:
            await self._check_exists(topic)
        # Straight to the app's producer (the one its tables write with), not through a Faust topic:
        # the topic's channel, message future and send sensors were 9% of the processor's CPU with
        # local steps (speed issue, W2b). A future: resolves once the broker has the record.
        return await self._app.producer.send(topic, key, value, partition=None, timestamp=None, headers=headers)

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
