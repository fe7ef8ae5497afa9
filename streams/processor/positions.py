"""Where each input partition resumes: right after the last input the agents' records reflect.

Faust resumes a partition at its committed offset and delivers what its fetcher reads.
The chaos harness showed both running ahead of what was applied (inputs that no processor
handled, around SIGKILLs and rebalances): a fetch answered for an old position after a
seek moves Faust's read offset on, and the inputs read again after it are then dropped
as "already read". An input skipped like that is never read again.

The agents' records are the authority instead: each one notes the last offset of every
input partition it applied (`delivery.last_offsets`), and a record reaches the changelog
before its input counts as done. So after every rebalance the position of each input
partition is taken from the restored records (the highest offset they hold, plus one),
and then kept up to date as inputs are handled. An input that arrives beyond its
partition's position means inputs in between were skipped: they are read directly from
the broker (`read_range`) and handled first, in order; inputs read twice are recognised
by de-duplication.

A partition's committed offset bounds its position from above as well: every input
before it is durable (commits.py), but the records only say where the latest applied
input was, and an earlier input of another agent may have been lost with a crash. So
the first input of a partition after a rebalance is expected at the lower of the two.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("agentstream.processor")

READ_TIMEOUT_S = 30.0


@dataclass
class InputPositions:
    """The next offset each input source (`topic#partition`) must deliver."""

    scan: Callable[[], Iterable[bytes]]
    committed: Callable[[str], int | None] = lambda source: None  # the group's committed offset, when known
    _generation: object = None
    _next: dict[str, int] = field(default_factory=dict)
    _bounded: set[str] = field(default_factory=set)  # sources whose committed offset was taken into account

    def missed(self, generation: object, source: str, offset: int) -> int | None:
        """The first offset skipped before `offset` of `source`, or None if nothing was
        (`generation` changes with every rebalance: positions are then taken from the records)."""
        if generation != self._generation:
            self._generation = generation
            self._next = self._from_records()
            self._bounded = set()
        if source not in self._bounded:  # its first input since the rebalance: nothing of it committed since
            self._bounded.add(source)
            committed = self.committed(source)
            if committed is not None and committed < self._next.get(source, committed + 1):
                self._next[source] = committed
        expected = self._next.get(source)
        return expected if expected is not None and offset > expected else None

    def handled(self, source: str, offset: int) -> None:
        self._next[source] = max(self._next.get(source, 0), offset + 1)

    def _from_records(self) -> dict[str, int]:
        positions: dict[str, int] = {}
        for value in self.scan():
            try:
                offsets = json.loads(value).get("delivery", {}).get("last_offsets", {})
            except (ValueError, AttributeError):
                continue
            for source, offset in offsets.items():
                if isinstance(offset, int) and offset + 1 > positions.get(source, 0):
                    positions[source] = offset + 1
        return positions


async def read_range(
    bootstrap: str, topic: str, partition: int, start: int, end: int, options: dict[str, Any] | None = None
) -> list[Any]:
    """The records at offsets `start` .. `end - 1` of one partition, read without a group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                **(options or {}))
    records: list[Any] = []
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + READ_TIMEOUT_S
        while time.monotonic() < deadline:
            batches = await consumer.getmany(tp, timeout_ms=200)
            for record in batches.get(tp, []):
                if record.offset >= end:
                    return records
                records.append(record)
            if records and records[-1].offset >= end - 1:
                return records
            if not batches and await consumer.position(tp) >= end:
                return records
        log.error("skipped inputs could not all be read again", extra={
            "topic": topic, "partition": partition, "from": start, "to": end, "read": len(records)})
        return records
    finally:
        await consumer.stop()
