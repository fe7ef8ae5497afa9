"""The processor's consumer asks again, within seconds, for subscribed topics its metadata lacks.

Faust creates the processors' changelog (and its assignor topic) just before its
consumer joins the group. On a multi-broker cluster the broker that answers the
consumer's next metadata request may not have applied the creation yet; aiokafka then
keeps a metadata without the topic until `metadata_max_age_ms` (5 minutes) passes. The
first rebalance leaves the changelog out, and every write of an agent's record fails
with PartitionsMismatch ("the changelog topic has 0 partitions") for those minutes:
the processor looks ready but applies nothing. Seen on a three-broker Apache Kafka
cluster under load.

The Java consumer refreshes metadata soon when a subscribed topic is unknown; this does
the same for aiokafka: after a metadata update that lacks a subscribed topic, another
update is asked for after a short, growing delay. When the topic shows up, the group
coordinator sees the subscription's metadata change and rejoins, so the next
assignment includes it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

log = logging.getLogger("agentstream.processor")

FIRST_RETRY_S = 0.5
MAX_RETRY_S = 30.0
_MARK = "_agentstream_watches_missing_topics"


def watch_missing_topics(client: Any, first_s: float = FIRST_RETRY_S, max_s: float = MAX_RETRY_S) -> None:
    """Make `client` (an `AIOKafkaClient`) ask again for subscribed topics its metadata lacks."""
    delay = first_s
    pending: asyncio.TimerHandle | None = None

    def ask_again() -> None:
        nonlocal pending
        pending = None
        client.force_metadata_update()

    def on_metadata(cluster: Any) -> None:  # runs in the client's event loop, after every metadata update
        nonlocal delay, pending
        wanted = set(client._topics)
        missing = wanted - set(cluster.topics(exclude_internal_topics=False)) if wanted else set()
        if not missing:
            delay = first_s
            return
        if pending is not None:
            return
        log.info("subscribed topics missing from the cluster metadata; asking again",
                 extra={"topics": sorted(missing), "retry_in_s": delay})
        pending = asyncio.get_running_loop().call_later(delay, ask_again)
        delay = min(delay * 2, max_s)

    client.cluster.add_listener(on_metadata)


def install() -> None:
    """Give every consumer Faust creates from now on (in this process) the watch, once."""
    if getattr(AIOKafkaConsumerThread, _MARK, False):
        return
    create = AIOKafkaConsumerThread._create_worker_consumer

    def create_watching(thread: Any, transport: Any) -> Any:
        consumer = create(thread, transport)
        watch_missing_topics(consumer._client)
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create_watching  # type: ignore[method-assign,assignment]
    setattr(AIOKafkaConsumerThread, _MARK, True)
