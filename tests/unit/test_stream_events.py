"""agent-stream without a broker: the topic spec, `StreamEvent`, cursors, the writer, the SSE pump.

The writer is driven through a stand-in producer whose acknowledgements the test
resolves by hand, so "flush waits for every ack" is observable; the SSE pump through a
stand-in reader and a clock the test moves, so heartbeats need no 15 s wait.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from agentstream.streams.processor.sse import StreamPump, sse_frame
from agentstream.streams.stream_out import PublisherProducer, StreamWriter
from agentstream.topics import (
    InvalidCursorError,
    StreamEvent,
    StreamItem,
    TopicNames,
    parse_stream_cursor,
    stream_cursor,
    stream_event_id,
)
from agentstream.topics._names import DAY_MS

NAMES = TopicNames("t.")


# --- the topic --------------------------------------------------------------------------------


def test_agent_stream_is_a_topic_with_the_shared_partition_count_and_a_day_of_retention() -> None:
    specs = {spec.name: spec for spec in NAMES.specs(6, task_queues=("q",))}
    stream = specs[NAMES.agent_stream]
    assert NAMES.agent_stream == "t.agent-stream"
    assert stream.partitions == specs[NAMES.agent_events].partitions == 6
    assert stream.configs() == {"cleanup.policy": "delete", "retention.ms": str(DAY_MS)}


# --- StreamEvent ------------------------------------------------------------------------------


def event(**fields: Any) -> StreamEvent:
    base: dict[str, Any] = {"agent_id": "a", "run_id": "r", "step_id": "s1", "attempt": 1, "seq": 0, "type": "text_delta"}
    return StreamEvent(**{**base, **fields})


def test_a_stream_event_id_is_derived_from_run_step_attempt_and_seq() -> None:
    first, again = event(data="hel"), event(data="different text, same position")
    assert first.message_id == again.message_id == stream_event_id("r", "s1", 1, 0)
    others = {event(seq=1).message_id, event(attempt=2).message_id, event(step_id="s2").message_id,
              event(run_id="r2").message_id, event(step_id=None, attempt=None).message_id}
    assert len(others) == 5 and first.message_id not in others


def test_a_stream_event_decoded_without_message_id_gets_the_derived_one_and_a_given_id_is_kept() -> None:
    raw = {"kind": "stream_event", "agent_id": "a", "run_id": "r", "seq": 3, "type": "run_started"}
    assert StreamEvent.model_validate_json(json.dumps(raw)).message_id == stream_event_id("r", None, None, 3)
    assert event(message_id="mine").message_id == "mine"


@pytest.mark.parametrize(
    "fields",
    [{"type": "token"}, {"seq": -1}, {"attempt": 0}, {"step_id": ""}, {"surprise": 1}],
    ids=["unknown type", "negative seq", "attempt 0", "empty step_id", "unknown field"],
)
def test_a_stream_event_refuses_invalid_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        event(**fields)


# --- cursors ----------------------------------------------------------------------------------


def test_a_cursor_round_trips_partition_and_offset() -> None:
    assert parse_stream_cursor(stream_cursor(3, 1182)) == (3, 1182)
    assert parse_stream_cursor(stream_cursor(0, 0)) == (0, 0)


@pytest.mark.parametrize("cursor", ["", "3", "3:", ":5", "a:1", "1:b", "-1:5", "1:-5", "1:2:3", " 1:2", "1:2\n"])
def test_a_malformed_cursor_is_refused_with_a_reason(cursor: str) -> None:
    with pytest.raises(InvalidCursorError, match="cursor"):
        parse_stream_cursor(cursor)


# --- the writer -------------------------------------------------------------------------------


class HeldProducer:
    """An aiokafka-shaped producer: `send` queues and returns the ack future, resolved by the test."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, asyncio.Future[Any]]] = []

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> asyncio.Future[Any]:
        assert value is not None and key is not None
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, value, ack))
        return ack

    def events(self) -> list[StreamEvent]:
        return [StreamEvent.model_validate_json(value) for _, _, value, _ in self.sent]


async def test_the_writer_numbers_events_per_run_step_and_attempt_from_zero() -> None:
    producer = HeldProducer()
    writer = StreamWriter(producer, NAMES)
    await writer.emit("a", "r", "s1", 1, "text_delta", "he")
    await writer.emit("a", "r", "s1", 1, "text_delta", "llo")
    await writer.emit("a", "r", "s1", 2, "superseded", {"attempt": 1})
    await writer.emit("a", "r", "s2", 1, "tool_call", {"name": "f"})
    await writer.emit("a", "r", None, None, "run_started", None)
    await writer.emit("a", "r", "s1", 1, "text_delta", "!")
    await writer.emit("b", "r2", "s1", 1, "text_delta", "x")

    got = [(e.agent_id, e.step_id, e.attempt, e.seq) for e in producer.events()]
    assert got == [("a", "s1", 1, 0), ("a", "s1", 1, 1), ("a", "s1", 2, 0), ("a", "s2", 1, 0),
                   ("a", None, None, 0), ("a", "s1", 1, 2), ("b", "s1", 1, 0)]
    assert {topic for topic, _, _, _ in producer.sent} == {NAMES.agent_stream}
    assert [key for _, key, _, _ in producer.sent] == [b"a"] * 6 + [b"b"]


async def test_flush_returns_only_once_every_emitted_event_is_acknowledged() -> None:
    producer = HeldProducer()
    writer = StreamWriter(producer, NAMES)
    for text in "abc":
        await writer.emit("a", "r", "s", 1, "text_delta", text)
    flushing = asyncio.create_task(writer.flush())
    for _, _, _, ack in producer.sent[:2]:
        ack.set_result(None)
    await asyncio.sleep(0.05)
    assert not flushing.done(), "flush returned before the last ack"
    producer.sent[2][3].set_result(None)
    await asyncio.wait_for(flushing, 1)


async def test_flush_raises_when_an_event_was_not_delivered() -> None:
    producer = HeldProducer()
    writer = StreamWriter(producer, NAMES)
    await writer.emit("a", "r", "s", 1, "text_delta", "x")
    await writer.emit("a", "r", "s", 1, "text_delta", "y")
    producer.sent[0][3].set_exception(RuntimeError("broker said no"))
    producer.sent[1][3].set_result(None)
    with pytest.raises(RuntimeError, match="broker said no"):
        await writer.flush()
    await writer.flush()  # what failed was reported once; nothing is pending any more


async def test_supersede_names_the_abandoned_attempt_in_the_new_attempts_sequence() -> None:
    producer = HeldProducer()
    writer = StreamWriter(producer, NAMES)
    await writer.emit("a", "r", "s", 2, "text_delta", "new")
    marker = await writer.supersede("a", "r", "s", 2, abandoned=1)
    assert (marker.type, marker.step_id, marker.attempt, marker.seq, marker.data) == ("superseded", "s", 2, 1, {"attempt": 1})


async def test_a_processor_publisher_serves_as_the_writers_producer() -> None:
    """A processor's `Publisher` returns the ack future from `publish` (or None when already acked)."""
    published: list[tuple[str, bytes | None, bytes]] = []
    held: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    class Publisher:
        async def publish(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[Any] | None:
            published.append((topic, key, value))
            return held if len(published) == 1 else None

    writer = StreamWriter(PublisherProducer(Publisher()), NAMES)
    await writer.emit("a", "r", None, None, "run_started")
    await writer.emit("a", "r", None, None, "run_finished", {"status": "completed"})
    flushing = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.05)
    assert not flushing.done(), "flush returned before the publisher's ack"
    held.set_result(None)
    await asyncio.wait_for(flushing, 1)
    assert [(t, k, StreamEvent.model_validate_json(v).seq) for t, k, v in published] == [
        (NAMES.agent_stream, b"a", 0), (NAMES.agent_stream, b"a", 1)
    ]


# --- the SSE pump -----------------------------------------------------------------------------


def item(offset: int, seq: int, type: str = "text_delta") -> StreamItem:
    """The same item each time it is asked for (a fixed `sent_at`), so frames compare equal."""
    sent_at = datetime(2025, 3, 1, tzinfo=timezone.utc)
    return StreamItem(stream_cursor(2, offset), event(seq=seq, type=type, data=f"d{seq}", sent_at=sent_at))


class ScriptedReader:
    """Hands out batches in order; 'caught up' once the batches marked as the backlog are out."""

    def __init__(self, batches: list[list[StreamItem]], backlog: int) -> None:
        self.batches, self.backlog, self.polls = batches, backlog, 0

    async def poll(self, timeout_s: float) -> list[StreamItem]:
        self.polls += 1
        return self.batches.pop(0) if self.batches else []

    async def caught_up(self) -> bool:
        return self.polls >= self.backlog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_sse_frame_carries_the_cursor_as_id_the_type_as_event_and_the_envelope_as_data() -> None:
    sent = item(7, 0)
    frame = sse_frame(sent).decode()
    lines = frame.split("\n")
    assert lines[:2] == ["id: 2:7", "event: text_delta"]
    assert lines[2].startswith("data: ") and frame.endswith("\n\n") and frame.count("\n") == 4
    assert StreamEvent.model_validate_json(lines[2][len("data: "):]) == sent.event


async def test_the_pump_without_follow_ends_once_caught_up() -> None:
    written: list[bytes] = []

    async def write(chunk: bytes) -> None:
        written.append(chunk)

    reader = ScriptedReader([[item(1, 0), item(2, 1)], [item(5, 2)], [item(9, 3)]], backlog=2)
    await StreamPump(reader, write, follow=False, heartbeat_s=15, clock=Clock()).run()
    assert written == [sse_frame(item(1, 0)), sse_frame(item(2, 1)), sse_frame(item(5, 2))]


async def test_the_pump_sends_a_heartbeat_comment_when_idle_and_stops_when_told() -> None:
    written: list[bytes] = []
    clock = Clock()
    stop = False

    async def write(chunk: bytes) -> None:
        written.append(chunk)

    class IdleReader(ScriptedReader):
        async def poll(self, timeout_s: float) -> list[StreamItem]:
            nonlocal stop
            clock.now += 4.0
            stop = clock.now >= 40
            return await super().poll(timeout_s)

    reader = IdleReader([[item(1, 0)]], backlog=1)
    await StreamPump(reader, write, follow=True, heartbeat_s=15, clock=clock, stopped=lambda: stop).run()
    assert written[0] == sse_frame(item(1, 0))
    assert written[1:] == [b": heartbeat\n\n", b": heartbeat\n\n"]  # at 20 s and 36 s of silence


async def test_the_pump_ends_quietly_when_the_client_is_gone() -> None:
    calls = 0

    async def write(chunk: bytes) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionResetError("client went away")

    reader = ScriptedReader([[item(1, 0), item(2, 1)]] + [[item(3 + n, 2 + n)] for n in range(100)], backlog=999)
    await asyncio.wait_for(StreamPump(reader, write, follow=True, heartbeat_s=15, clock=Clock()).run(), 1)
    assert calls == 1
