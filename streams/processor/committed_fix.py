"""A processor learns its partitions' committed offsets in one request per assignment, not one per partition.

After every assignment Faust moves each assigned partition to its committed offset.
aiokafka's `seek_to_committed` asks the group coordinator about one partition at a time,
one round trip each, in a row; and a partition it leaves without a position (none
committed, or 0) is asked about again, one at a time, by aiokafka's fetcher before it
fetches. A processor restarted on Apache Kafka with the default 8 partitions (25
assigned: the inputs, the changelog and Faust's leader topic) sent 46 OffsetFetch
requests in a row before its first input.

The coordinator answers for any number of partitions in one request (aiokafka's own
`refresh_committed_offsets` asks it so). So the seek asks once, and then places every
partition where aiokafka would have, sooner: at its committed offset, or, where none is
committed, due for the consumer's reset policy (what the fetcher does once it has asked).
The fetcher still asks about the partitions it reaches before the seek has placed them.

Measured on the same restart: 12 OffsetFetch requests instead of 46, and from "processor
starting" to "timers re-armed" (Faust's start, the join, the recovery) 130 ms instead of
150 ms (medians of 8 restarts each, alternating). More partitions, more saved.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import OffsetResetStrategy
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

_MARK = "_agentstream_one_request"


async def seek_all_to_committed(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int | None]:
    """`consumer.seek_to_committed()` for every assigned partition, in one request: the same
    offsets returned (None where nothing is committed), the same positions in the end."""
    partitions = consumer.assignment()
    assert partitions, "No partitions are currently assigned"  # as aiokafka's
    fetcher: Any = consumer._fetcher
    assignment: Any = consumer._subscription.subscription.assignment
    committed = await consumer._coordinator.fetch_committed_offsets(list(partitions))
    offsets: dict[TopicPartition, int | None] = {}
    none_committed = []
    for tp in partitions:
        found = committed.get(tp)
        offset = offsets[tp] = None if found is None or found.offset == -1 else found.offset
        if offset is not None and offset > 0:  # what aiokafka's seek does
            fetcher.seek_to(tp, offset)
            continue
        # What aiokafka's fetcher would then do, asking about each such partition again: a partition
        # that has a position (or is due for a reset) keeps it; one without goes to offset 0 if that
        # is what is committed, else it is due for the consumer's reset policy (with none, the
        # fetcher raises NoOffsetForPartitionError: left to it).
        state = assignment.state_value(tp)
        if state.has_valid_position or state.awaiting_reset:
            continue
        if offset == 0:
            fetcher.seek_to(tp, 0)
        else:
            none_committed.append(tp)
    if none_committed and fetcher._default_reset_strategy != OffsetResetStrategy.NONE:
        positioned = fetcher.request_offset_reset(none_committed, fetcher._default_reset_strategy)
        positioned.add_done_callback(_retrieved)  # not awaited: aiokafka's seek does not wait either
    return offsets


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():  # cancelled when the partitions go before they are positioned
        future.exception()


def install() -> None:
    """Idempotent; process-wide (every Faust app of the process is a processor)."""
    if getattr(AIOKafkaConsumerThread.seek_to_committed, _MARK, False):
        return

    async def seek_to_committed(self: Any) -> Any:
        return await self.call_thread(seek_all_to_committed, self._ensure_consumer())

    setattr(seek_to_committed, _MARK, True)
    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
