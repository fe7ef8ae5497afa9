"""Reading one agent's `agent-stream` from a cursor: what `AgentClient.stream` and the SSE view share.

The reader needs no consumer group: it assigns itself the one partition that holds the
agent's key (found with the producers' partitioner) and seeks right after the cursor,
so it reads only that partition and any number of readers can follow the same agent.
Records of other agents on that partition are skipped. A cursor names the partition
and offset of the last event a reader saw (`topics.stream_cursor`), so a reader that
comes back with it resumes exactly after that event: nothing missed, nothing twice.
A cursor older than the topic's retention resumes at the oldest record still kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from agentstream.topics import (
    ConfigurationError,
    InvalidCursorError,
    StreamEvent,
    StreamItem,
    parse_stream_cursor,
    stream_cursor,
)

from .broker.profile import BrokerProfile
from .kafka import connection_failed, partitions_now
from .security import KafkaSecurity

log = logging.getLogger("agentstream.stream")

POLL_S = 0.5  # the longest one `poll` of the client's iterator waits


def partition_of(key: bytes, partitions: list[int]) -> int:
    """The partition a producer with the default partitioner sends `key` to (murmur2, like Kafka's Java client)."""
    return int(DefaultPartitioner()(key, partitions, partitions))


class StreamReader:
    """Reads one agent's events from `agent-stream`, after a cursor. `start` before use, `stop` after."""

    def __init__(
        self, bootstrap: str, topic: str, agent_id: str, after: str | None, *, profile: BrokerProfile | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        self._start_after = None if after is None else parse_stream_cursor(after)  # bad cursors fail at once
        self._bootstrap = bootstrap
        self._security = security
        self._topic = topic
        self._key = agent_id.encode()
        options: dict[str, Any] = {**(security or {})}
        if profile is not None and profile.fetch_max_wait_ms is not None:
            options["fetch_max_wait_ms"] = profile.fetch_max_wait_ms
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a cursor past retention: the oldest record kept
            **options,
        )
        self._partition: TopicPartition | None = None
        self._end = 0

    async def start(self) -> None:
        """Connect, find the agent's partition, seek after the cursor and note where the backlog ends.

        Raises `ConfigurationError` when the topic is missing, `InvalidCursorError` for a
        cursor of another partition, `BrokerUnavailableError` when the broker is unreachable.
        """
        consumer = self._consumer
        try:
            await consumer.start()
            partitions = await partitions_now(consumer, self._topic)
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            await consumer.stop()
            raise await connection_failed(self._bootstrap, self._security, exc) from exc
        try:
            if not partitions:
                raise ConfigurationError(f"topic {self._topic} does not exist; create it with `agentstream topics create`")
            partition = TopicPartition(self._topic, partition_of(self._key, partitions))
            if self._start_after is not None and self._start_after[0] != partition.partition:
                raise InvalidCursorError(
                    f"stream cursor {stream_cursor(*self._start_after)} is of partition {self._start_after[0]}, but this "
                    f"agent's events are on partition {partition.partition} (was the topic's partition count changed?)"
                )
            consumer.assign([partition])
            if self._start_after is None:
                await consumer.seek_to_beginning(partition)
            else:
                consumer.seek(partition, self._start_after[1] + 1)
            self._end = (await consumer.end_offsets([partition]))[partition]
            self._partition = partition
        except BaseException:
            await consumer.stop()
            raise

    async def stop(self) -> None:
        await self._consumer.stop()

    async def poll(self, timeout_s: float) -> list[StreamItem]:
        """The agent's next events (maybe none), waiting at most about `timeout_s` for some."""
        assert self._partition is not None, "start() first"
        batches = await self._consumer.getmany(self._partition, timeout_ms=int(timeout_s * 1000))
        items = []
        for record in batches.get(self._partition, []):
            if record.key != self._key:
                continue
            try:
                event = StreamEvent.model_validate_json(record.value)
            except ValidationError as exc:  # someone else's junk must not end every reader of the partition
                log.warning(
                    "skipping a record of agent-stream that is not a stream event",
                    extra={"partition": record.partition, "offset": record.offset, "error": str(exc)[:300]},
                )
                continue
            items.append(StreamItem(stream_cursor(record.partition, record.offset), event))
        return items

    async def caught_up(self) -> bool:
        """Whether everything that was on the partition when the reader started has been read."""
        assert self._partition is not None, "start() first"
        return int(await self._consumer.position(self._partition)) >= self._end


async def read_agent_stream(
    bootstrap: str,
    topic: str,
    agent_id: str,
    after: str | None = None,
    *,
    follow: bool = True,
    idle_timeout: float | None = None,
    profile: BrokerProfile | None = None,
    security: KafkaSecurity | None = None,
) -> AsyncGenerator[StreamItem, None]:
    """The agent's events after `after` (from the oldest kept when None).

    With `follow` the iterator waits for new events until the caller stops iterating,
    or until `idle_timeout` seconds pass without a new event; without it, it ends once
    it has read what the partition held when it started.
    """
    reader = StreamReader(bootstrap, topic, agent_id, after, profile=profile, security=security)
    await reader.start()
    try:
        last_event = time.monotonic()
        while follow or not await reader.caught_up():
            wait = POLL_S if idle_timeout is None else max(0.0, min(POLL_S, last_event + idle_timeout - time.monotonic()))
            items = await reader.poll(wait)
            for item in items:
                yield item
            if items:
                last_event = time.monotonic()
            elif idle_timeout is not None and time.monotonic() >= last_event + idle_timeout:
                return
    finally:
        await reader.stop()
