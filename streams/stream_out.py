"""`StreamWriter`: how workers and processors put live output on `agent-stream`.

A model call streams many small events; waiting for the broker after each would pace
the tokens by the round trip. So `emit` only queues the record (the producer keeps the
order of one partition) and keeps its acknowledgement; `flush` waits for all of them,
and a step should flush before it reports its result, so the stream never lags behind
the step's committed outcome.

Sequence numbers count the events of one (run, step, attempt) from 0, in this writer.
An attempt that runs again in another process (a worker killed mid-step and the command
redelivered with the same attempt number) starts again at 0: its events then carry the
same message IDs as the first run's, and a reader that sees seq 0 of an attempt again
drops what it had of that attempt. A new attempt announces itself with `supersede`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Any, Protocol

from pydantic import JsonValue

from agentstream.topics import StreamEvent, StreamEventType, TopicNames

# Counters of this many (run, step, attempt) positions are kept; the oldest go first.
REMEMBERED_POSITIONS = 10_000

Position = tuple[str, str, str | None, int | None]  # agent, run, step, attempt


class StreamProducer(Protocol):
    """What the writer needs of a producer: aiokafka's `send`, which returns the ack future once queued."""

    async def send(self, topic: str, value: bytes | None = ..., key: bytes | None = ...) -> Awaitable[Any]: ...


class PublisherProducer:
    """Adapts a processor's `Publisher` (`publish(topic, key, value)`) to `StreamProducer`."""

    def __init__(self, publisher: Any) -> None:
        self._publisher = publisher

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Awaitable[Any]:
        assert value is not None
        ack = await self._publisher.publish(topic, key, value)
        return ack if ack is not None else _done()


async def _done() -> None:
    return None


class StreamWriter:
    """Emits `StreamEvent`s of any number of agents, numbering them per (run, step, attempt)."""

    def __init__(self, producer: StreamProducer, names: TopicNames) -> None:
        self._producer = producer
        self._topic = names.agent_stream
        self._next_seq: OrderedDict[Position, int] = OrderedDict()
        self._pending: list[asyncio.Future[Any]] = []

    async def emit(
        self,
        agent_id: str,
        run_id: str,
        step_id: str | None,
        attempt: int | None,
        type: StreamEventType,
        data: JsonValue = None,
    ) -> StreamEvent:
        """Queue one event with the next seq of its position; returns it without waiting for the broker."""
        position = (agent_id, run_id, step_id, attempt)
        seq = self._next_seq.pop(position, 0)
        self._next_seq[position] = seq + 1
        if len(self._next_seq) > REMEMBERED_POSITIONS:
            self._next_seq.popitem(last=False)
        event = StreamEvent(
            agent_id=agent_id, run_id=run_id, step_id=step_id, attempt=attempt, seq=seq, type=type, data=data
        )
        ack = asyncio.ensure_future(await self._producer.send(self._topic, value=event.to_bytes(), key=event.key))
        ack.add_done_callback(_retrieve)  # reported by flush; never "exception was never retrieved"
        self._pending.append(ack)
        return event

    async def supersede(self, agent_id: str, run_id: str, step_id: str, attempt: int, *, abandoned: int) -> StreamEvent:
        """Say, as attempt `attempt` of the step, that attempt `abandoned` was given up: drop its output."""
        return await self.emit(agent_id, run_id, step_id, attempt, "superseded", {"attempt": abandoned})

    def forget(self, agent_id: str, run_id: str, step_id: str | None, attempt: int | None) -> None:
        """Drop the counter of a finished position (optional: old counters also age out)."""
        self._next_seq.pop((agent_id, run_id, step_id, attempt), None)

    async def flush(self) -> None:
        """Wait until the broker acknowledged every event emitted so far; raise the first failure."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
