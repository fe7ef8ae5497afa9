"""`GET /agents/{id}` answers from a view kept until the store says the agent's record changed."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from agentstream.agents import agent, condition
from agentstream.streams.engine import AgentRecord, Delivery
from agentstream.streams.engine.record import ChildState, JournalEntry, StepState
from agentstream.streams.processor.views import PublicViews
from agentstream.topics import AgentStatus

from turns import Turns


@agent.defn(name="Views.Counter")
class Counter:
    def __init__(self) -> None:
        self.count = 0

    @agent.event
    async def bump(self) -> None:
        self.count += 1

    @agent.run
    async def run(self) -> None:
        await condition(lambda: False)


class Stored:
    """What the views read (RocksDB in the processor), counting the reads."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.reads = 0

    def get(self, key: bytes) -> bytes | None:
        self.reads += 1
        return self.records.get(key)


def count(view: bytes | None) -> int:
    assert view is not None
    return int(json.loads(view)["fields"]["count"])


async def records(*agent_ids: str) -> tuple[Turns, Stored]:
    turns, stored = Turns(), Stored()
    for agent_id in agent_ids:
        outcome = await turns.schedule("Views.Counter", agent_id)
        assert outcome.stored is not None
        stored.records[agent_id.encode()] = outcome.stored
    return turns, stored


async def test_a_view_is_read_once_until_its_record_changes() -> None:
    turns, stored = await records("c")
    views = PublicViews(stored.get)
    assert [count(views.of(b"c")) for _ in range(3)] == [0, 0, 0]
    assert stored.reads == 1

    bumped = (await turns.send("c", "bump")).stored
    assert bumped is not None
    stored.records[b"c"] = bumped
    assert count(views.of(b"c")) == 0  # kept: nothing said the record changed
    views.changed(b"c")
    assert count(views.of(b"c")) == 1 and stored.reads == 2
    assert json.loads(views.of(b"c") or b"") == AgentRecord.from_bytes(bumped).public_view()


async def test_a_reset_drops_every_view_and_an_unkept_read_is_not_kept() -> None:
    _, stored = await records("a", "b")
    views = PublicViews(stored.get)
    views.of(b"a")
    views.of(b"b")
    views.reset()
    views.of(b"a")
    views.of(b"b")
    assert stored.reads == 4
    views.of(b"a")
    assert stored.reads == 4

    views.reset()
    views.of(b"a", keep=False)  # read while a restore may still write
    views.of(b"a")
    assert stored.reads == 6


async def test_an_agent_without_a_record_has_no_view() -> None:
    _, stored = await records()
    views = PublicViews(stored.get)
    assert views.of(b"nobody") is None
    assert views.of(b"nobody") is None and stored.reads == 2  # nothing kept: its schedule may be applied next


async def test_the_cache_keeps_only_the_most_recently_read_agents() -> None:
    _, stored = await records("a", "b", "c")
    views = PublicViews(stored.get, size=2)
    for agent_id in (b"a", b"b", b"a", b"c"):  # c pushes out b, the least recently read
        views.of(agent_id)
    assert stored.reads == 3
    views.of(b"a")
    assert stored.reads == 3
    views.of(b"b")
    assert stored.reads == 4


async def test_a_read_agents_new_view_is_made_from_the_written_record_once_those_bytes_are_stored() -> None:
    turns, stored = await records("c", "d")
    views = PublicViews(stored.get)
    views.of(b"c")  # c is being read; d is not
    assert stored.reads == 1
    for agent_id in ("c", "d"):
        outcome = await turns.send(agent_id, "bump")
        assert outcome.stored is not None and outcome.record is not None
        views.written(agent_id.encode(), outcome.stored, outcome.record)
        stored.records[agent_id.encode()] = outcome.stored
    assert count(views.of(b"c")) == 0  # written is not stored: the view stays until the store says so
    views.changed(b"c", stored.records[b"c"])
    views.changed(b"d", stored.records[b"d"])
    assert count(views.of(b"c")) == 1 and stored.reads == 1  # made from the record: no read, no parse
    assert views.of(b"c") == AgentRecord.from_bytes(stored.records[b"c"]).public_json()
    assert count(views.of(b"d")) == 1 and stored.reads == 2  # d had no view: read as before

    older = (await turns.send("c", "bump")).stored
    newer = await turns.send("c", "bump")
    assert older is not None and newer.stored is not None and newer.record is not None
    views.written(b"c", newer.stored, newer.record)
    views.changed(b"c", older)  # an earlier write acknowledged: not what was noted, so read as before
    stored.records[b"c"] = older
    assert count(views.of(b"c")) == 2 and stored.reads == 3


def test_the_public_view_shows_what_a_client_needs_and_none_of_the_bookkeeping() -> None:
    at = datetime(2026, 12, 2, 21, 0, tzinfo=timezone.utc)
    record = AgentRecord(
        agent_id="v-1", agent_type="Views.Counter", run_id="r", status=AgentStatus.RUNNING, created_at=at,
        updated_at=at, fields={"name": "Zoë", "big": 1e16, "nested": {"list": [1, None, "x"]}},
        journal=[JournalEntry(kind="event", at=at, message_id="m1")],
        steps={"3": StepState(seq=3, function="f", task_queue="q", scheduled_at=at)},
        timers={"t:4": at + timedelta(seconds=5)},
        children={"5": ChildState(agent_id="c-1", run_id="cr", agent_type="T", awaited=True)},
        parked=[{"kind": "event"}, {"kind": "event"}],
        delivery=Delivery(last_offsets={"agent-events#0": 9}, recent_keys={"k": 1.0}),
    )
    view = record.public_view()
    assert view == json.loads(record.public_json())  # what GET /agents/{id} sends, as a client reads it
    assert view["fields"] == {"name": "Zoë", "big": 1e16, "nested": {"list": [1, None, "x"]}}
    assert (view["agent_id"], view["status"], view["created_at"]) == ("v-1", "running", "2026-12-02T21:00:00Z")
    assert view["journal_length"] == 1 and view["steps_in_flight"] == 1 and view["parked_inputs"] == 2
    assert view["timers"] == {"t:4": "2026-12-02T21:00:05+00:00"}
    assert view["children"] == {"c-1": {"agent_type": "T", "done": False}}
    assert not {"delivery", "base", "journal", "steps", "parked", "outbox", "undelivered"} & set(view)
