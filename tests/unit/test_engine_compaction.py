"""Compaction never changes what an agent does: the locals on every await chain count (DESIGN.md guarantee 5)."""

from __future__ import annotations

import threading

from agentstream.agents import agent, condition
from agentstream.topics import AgentStatus

from turns import Turns

# --- agents used here ------------------------------------------------------------------------


@agent.defn(name="Compaction.LoopCounter")
class LoopCounter:
    """The issue's shape: `seen` lives only in run's frame, so restarting run would reset it."""

    def __init__(self) -> None:
        self.pending = 0

    @agent.event
    async def bump(self) -> None:
        self.pending += 1

    @agent.run
    async def run(self) -> int:
        seen = 0
        while seen < 3:
            await condition(lambda: self.pending > 0)
            self.pending -= 1
            seen += 1
        return seen


@agent.defn(name="Compaction.Recomputed")
class Recomputed:
    """Its loop's locals are recomputed from fields before each wait: a restart reaches the same state."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.handled = 0
        self.end = False

    @agent.event
    async def add(self, item: str) -> None:
        self.items.append(item)

    @agent.event
    async def end(self) -> None:
        self.end = True

    @agent.run
    async def run(self) -> int:
        while not self.end:
            known = len(self.items)
            await condition(lambda: len(self.items) > known or self.end)
            self.handled = len(self.items)
        return self.handled


class Opaque:
    """Not JSON: pydantic cannot snapshot it."""


@agent.defn(name="Compaction.OpaqueLocal")
class OpaqueLocal:
    """A local that cannot be snapshotted: whether a restart would rebuild it cannot be shown."""

    def __init__(self) -> None:
        self.ticks = 0
        self.end = False

    @agent.event
    async def tick(self) -> None:
        self.ticks += 1

    @agent.event
    async def end(self) -> None:
        self.end = True

    @agent.run
    async def run(self) -> int:
        lock = threading.Lock()  # the same at every restart, but not JSON
        while not self.end:
            await condition(lambda: self.end)
        assert lock is not None
        return self.ticks


@agent.defn(name="Compaction.HandlerLocal")
class HandlerLocal:
    """A waiting event handler whose local diverges from a restart of it."""

    def __init__(self) -> None:
        self.go = 0
        self.calls = 0

    @agent.event
    async def go(self) -> None:
        self.go += 1

    @agent.event
    async def wait_twice(self) -> int:
        waited = 0
        while waited < 2:
            goal = self.go + 1
            await condition(lambda: self.go >= goal)
            waited += 1
        self.calls += 1
        return waited

    @agent.run
    async def run(self) -> None:
        await condition(lambda: self.calls > 0)


# --- tests -------------------------------------------------------------------------------------


async def test_a_loop_counter_in_run_survives_compaction_and_the_agent_completes_after_three_bumps() -> None:
    turns = Turns()
    await turns.schedule("Compaction.LoopCounter", "l")
    for n in range(1, 3):
        outcome = await turns.send("l", "bump")
        assert outcome.facts.compaction_refused and not outcome.facts.compacted  # `seen` would reset to 0
        assert turns.record("l").status is AgentStatus.RUNNING
        assert len(turns.record("l").journal) == n
    outcome = await turns.send("l", "bump")
    record = turns.record("l")
    assert record.status is AgentStatus.COMPLETED and record.result == 3


async def test_with_compaction_refused_a_restart_replays_the_loop_counter_and_the_agent_completes() -> None:
    turns = Turns()
    await turns.schedule("Compaction.LoopCounter", "l")
    await turns.send("l", "bump")
    await turns.send("l", "bump")
    turns.forget_live_state()  # replay the two bumps from the record
    outcome = await turns.send("l", "bump")
    assert outcome.record is not None and outcome.record.status is AgentStatus.COMPLETED, outcome.record.error
    assert outcome.record.result == 3


async def test_locals_recomputed_from_fields_still_compact_and_replay() -> None:
    turns = Turns()
    await turns.schedule("Compaction.Recomputed", "r")
    for n, item in enumerate("abcd", start=1):
        outcome = await turns.send("r", "add", item)
        assert outcome.facts.compacted and turns.record("r").journal == []
        assert turns.record("r").fields["handled"] == n
    turns.forget_live_state()
    outcome = await turns.send("r", "add", "e")
    assert outcome.facts.compacted and turns.record("r").fields["handled"] == 5
    outcome = await turns.send("r", "end")
    assert outcome.record is not None and outcome.record.status is AgentStatus.COMPLETED and outcome.record.result == 5


async def test_a_local_that_cannot_be_snapshotted_refuses_compaction_and_the_agent_still_completes() -> None:
    turns = Turns()
    await turns.schedule("Compaction.OpaqueLocal", "o")
    for n in range(1, 4):
        outcome = await turns.send("o", "tick")
        assert outcome.facts.compaction_refused and not outcome.facts.compacted
        assert len(turns.record("o").journal) == n
    turns.forget_live_state()
    await turns.send("o", "tick")
    outcome = await turns.send("o", "end")
    assert outcome.record is not None and outcome.record.status is AgentStatus.COMPLETED and outcome.record.result == 4


async def test_a_waiting_handlers_locals_count_too() -> None:
    turns = Turns()
    await turns.schedule("Compaction.HandlerLocal", "h")
    outcome = await turns.send("h", "wait_twice")
    assert outcome.facts.compacted  # nothing happened in the handler yet: a restart of it is the same
    outcome = await turns.send("h", "go")
    assert outcome.facts.compaction_refused  # `waited` is 1 now; a restart would make it 0
    turns.forget_live_state()
    outcome = await turns.send("h", "go")
    record = turns.record("h")
    assert record.status is AgentStatus.COMPLETED, record.error
    assert [(e.name, e.result) for e in record.events if e.name == "wait_twice"] == [("wait_twice", 2)]
