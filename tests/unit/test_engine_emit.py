"""`agent.emit`, `agent.send`, `agent.ensure_started`: records from agent code to others, once, through the outbox.

They are published only by the turn that emitted them: a replay (after a restart) or a
restart after compaction emits them again at the same place, and nothing is sent twice.
"""

from __future__ import annotations

from agentstream.agents import agent, condition, function
from agentstream.streams.engine import AgentRecord
from agentstream.topics import ScheduleAgent, SendEvent, StreamEvent

from turns import Turns


@function
async def emit_echo(value: str) -> str:
    return value


@agent.defn(name="Emit.Announcer")
class Announcer:
    """Announces the run, a step's result and every event; waits for `stop`."""

    stopped: bool
    heard: int

    def __init__(self) -> None:
        self.stopped = False
        self.heard = 0

    @agent.run
    async def run(self) -> str:
        agent.emit("run_started", {"hello": 1})
        value = await agent.step(emit_echo, "v")
        agent.emit("tool_result", {"value": value}, update=True)
        await condition(lambda: self.stopped)
        agent.emit("run_finished")
        return value

    @agent.event
    async def ping(self, n: int) -> None:
        self.heard += 1
        agent.emit("text_delta", {"n": n})

    @agent.event
    async def stop(self) -> None:
        self.stopped = True


def stream_of(turns: Turns) -> list[StreamEvent]:
    return [event for outcome in turns.outcomes for event in outcome.stream]


def published(turns: Turns) -> list[tuple[str, str]]:
    return [(item.topic, item.value["type"] if item.topic == "agent-stream" else item.value["kind"])
            for outcome in turns.outcomes for item in outcome.publish]


async def test_emitted_events_go_to_agent_stream_through_the_outbox_once() -> None:
    turns = Turns()
    outcome = await turns.schedule("Emit.Announcer", "a1")
    assert [e.type for e in outcome.stream] == ["run_started"]
    assert ("agent-stream", "run_started") in [
        (item.topic, item.value.get("type")) for item in AgentRecord.from_bytes(outcome.stored or b"").outbox
    ]
    await turns.complete(outcome.commands[0], "v")
    update = [u for u in turns.outcomes[-1].updates if u.notice is not None]
    assert [u.notice for u in update] == [{"type": "tool_result", "data": {"value": "v"}}]
    await turns.send("a1", "ping", 7)
    turns.forget_live_state()  # the next turn replays the journal: nothing emitted again
    await turns.send("a1", "ping", 8)
    await turns.send("a1", "stop")
    events = stream_of(turns)
    assert [(e.type, e.data) for e in events] == [
        ("run_started", {"hello": 1}), ("tool_result", {"value": "v"}),
        ("text_delta", {"n": 7}), ("text_delta", {"n": 8}), ("run_finished", None),
    ]
    assert len({e.message_id for e in events}) == len(events)
    assert all(e.step_id is None and e.attempt is None for e in events)
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    assert turns.record("a1").result == "v"


async def test_a_replayed_turn_keeps_the_identity_of_its_events() -> None:
    first, second = Turns(), Turns()
    for turns in (first, second):
        outcome = await turns.apply(ScheduleAgent(message_id="s1", agent_id="a1", agent_type="Emit.Announcer"))
        await turns.complete(outcome.commands[0], "v")
    second.forget_live_state()
    for turns in (first, second):
        await turns.send("a1", "ping", 1)
        await turns.send("a1", "stop")
    assert [e.message_id for e in stream_of(first)] == [e.message_id for e in stream_of(second)]


@agent.defn(name="Emit.Mailbox")
class Mailbox:
    """Keeps what it is sent."""

    got: list[str]

    def __init__(self) -> None:
        self.got = []

    @agent.run
    async def run(self) -> None:
        await condition(lambda: False)

    @agent.event
    async def post(self, text: str) -> None:
        self.got.append(text)


@agent.defn(name="Emit.Sender")
class Sender:
    """Ensures a mailbox, posts to it on every `note`."""

    @agent.run
    async def run(self) -> None:
        await condition(lambda: False)

    @agent.event
    async def note(self, text: str) -> None:
        agent.ensure_started(Mailbox, "box")
        agent.send("box", "post", text)


async def test_send_and_ensure_started_reach_another_agent_once() -> None:
    turns = Turns()
    for sender in ("s1", "s2"):
        await turns.schedule("Emit.Sender", sender)
    sent = []
    for sender, text in (("s1", "a"), ("s2", "b"), ("s1", "c")):
        outcome = await turns.send(sender, "note", text)
        sent += outcome.messages
    schedules = [m for m in sent if isinstance(m, ScheduleAgent)]
    assert len({m.message_id for m in schedules}) == 1  # every sender sends the very same schedule
    turns.forget_live_state()
    delivered = [await turns.apply(m) for m in sent]  # as the processor would
    assert [o.label for o in delivered] == ["applied", "applied", "duplicate", "applied", "duplicate", "applied"]
    assert not any(o.dead_letters for o in delivered)
    assert turns.record("box").fields["got"] == ["a", "b", "c"]
    events = [m for m in sent if isinstance(m, SendEvent)]
    assert len({m.message_id for m in events}) == 3
