"""Agent code gets its own copies: mutating what it received or sent never rewrites the record."""

from __future__ import annotations

import asyncio
from typing import Any

from agentstream.agents import agent, condition, function
from agentstream.topics import AgentStatus, StepCommand

from turns import Turns


@function
async def make_dict(key: str) -> dict[str, Any]:
    return {"key": key, "seen": []}


@function
async def keep(value: Any) -> Any:
    return value


@agent.defn(name="Copies.NestedField")
class NestedField:
    """A nested field mutated in place, from a handler that waits on a step (no compaction meanwhile)."""

    def __init__(self) -> None:
        self.data: Any = {"n": 0}
        self.end = False

    @agent.event
    async def bump(self) -> int:
        self.data["n"] += 1
        return int(self.data["n"])

    @agent.event
    async def bump_then_step(self) -> int:
        self.data["n"] += 1
        await agent.step(function=keep, function_input="x")
        return int(self.data["n"])

    @agent.event
    async def end(self) -> None:
        self.end = True

    @agent.run
    async def run(self) -> int:
        await condition(lambda: self.end)
        return int(self.data["n"])


@agent.defn(name="Copies.StepResult")
class StepResultMutated:
    """Mutates a step's result after receiving it, while the next step is in flight."""

    def __init__(self) -> None:
        self.got: list[Any] = []

    @agent.run
    async def run(self) -> list[Any]:
        first = await agent.step(function=make_dict, function_input="a")
        first["seen"].append("mine")
        self.got.append(first)
        second = await agent.step(function=make_dict, function_input="b")
        second["seen"].append("mine")
        self.got.append(second)
        return self.got


@agent.defn(name="Copies.Payload")
class PayloadMutated:
    """A handler that changes its payload, then waits: its seed is what a compaction keeps."""

    def __init__(self) -> None:
        self.total = 0
        self.tags: list[str] = []
        self.release = False

    @agent.event
    async def note(self, payload: Any) -> int:
        payload["tags"].append("seen")
        await condition(lambda: self.release)
        self.total += payload["n"]
        self.tags += payload["tags"]
        return self.total

    @agent.event
    async def release(self) -> None:
        self.release = True

    @agent.run
    async def run(self) -> None:
        await condition(lambda: self.total < 0)


@agent.defn(name="Copies.StepInput")
class StepInputMutated:
    """Changes a dict after passing it as a step's input, while the step is in flight."""

    def __init__(self) -> None:
        self.result: Any = None

    @agent.run
    async def run(self) -> Any:
        value: dict[str, Any] = {"items": [1]}

        async def change_it_later() -> None:
            await asyncio.sleep(0)
            value["items"].append(2)

        self.result, _ = await asyncio.gather(agent.step(function=keep, function_input=value), change_it_later())
        return self.result


def only_command(outcome: Any) -> StepCommand:
    assert len(outcome.commands) == 1, outcome.commands
    return outcome.commands[0]  # type: ignore[no-any-return]


async def test_a_nested_field_mutated_in_place_counts_right_after_a_restart_and_never_rewrites_a_record() -> None:
    turns = Turns()
    kept: list[tuple[Any, bytes]] = []  # each turn's record, and its bytes when the turn ended

    def keep_record() -> None:
        kept.append((turns.record("n"), turns.record("n").to_bytes()))

    await turns.schedule("Copies.NestedField", "n")
    keep_record()
    for _ in range(3):
        await turns.send("n", "bump")
        keep_record()
    step = only_command(await turns.send("n", "bump_then_step"))
    keep_record()
    assert turns.record("n").fields["data"] == {"n": 4}
    turns.forget_live_state()
    outcome = await turns.complete(step, "x")
    keep_record()
    assert outcome.record is not None and outcome.record.status is AgentStatus.RUNNING, outcome.record.error
    outcome = await turns.send("n", "bump")
    keep_record()
    assert outcome.record is not None and outcome.record.status is AgentStatus.RUNNING, outcome.record.error
    assert outcome.record.fields["data"] == {"n": 5}
    turns.forget_live_state()
    outcome = await turns.send("n", "end")
    assert outcome.record is not None and outcome.record.status is AgentStatus.COMPLETED, outcome.record.error
    assert outcome.record.result == 5
    # A processor may serialise a record after the next turn ran: no turn may change an earlier one.
    assert [record.to_bytes() for record, _ in kept] == [data for _, data in kept]


async def test_a_step_result_mutated_by_the_code_stays_original_in_the_journal_and_replays() -> None:
    turns = Turns()
    first = only_command(await turns.schedule("Copies.StepResult", "s"))
    second = only_command(await turns.complete(first, {"key": "a", "seen": []}))
    record = turns.record("s")
    assert record.journal[0].outcome is not None and record.journal[0].outcome.value == {"key": "a", "seen": []}
    assert record.fields["got"] == [{"key": "a", "seen": ["mine"]}]
    turns.forget_live_state()
    outcome = await turns.complete(second, {"key": "b", "seen": []})
    assert outcome.record is not None and outcome.record.status is AgentStatus.COMPLETED, outcome.record.error
    assert outcome.record.result == [{"key": "a", "seen": ["mine"]}, {"key": "b", "seen": ["mine"]}]


async def test_a_handler_mutating_its_payload_leaves_the_seed_and_events_as_received() -> None:
    turns = Turns()
    await turns.schedule("Copies.Payload", "p")
    outcome = await turns.send("p", "note", {"n": 1, "tags": []})
    assert outcome.facts.compacted
    record = turns.record("p")
    assert record.base is not None
    assert [s.payload for s in record.base.seeds if s.kind == "event"] == [{"n": 1, "tags": []}]
    assert record.events[-1].payload == {"n": 1, "tags": []}
    turns.forget_live_state()
    await turns.send("p", "note", {"n": 2, "tags": []})
    turns.forget_live_state()
    outcome = await turns.send("p", "release")
    assert outcome.record is not None and outcome.record.status is AgentStatus.RUNNING, outcome.record.error
    assert outcome.record.fields["total"] == 3 and outcome.record.fields["tags"] == ["seen", "seen"]


async def test_a_step_input_changed_after_the_step_was_issued_is_sent_and_journaled_as_issued() -> None:
    turns = Turns()
    command = only_command(await turns.schedule("Copies.StepInput", "i"))
    assert command.input == {"items": [1]}
    assert turns.record("i").steps[command.step_id].input == {"items": [1]}
    turns.forget_live_state()
    outcome = await turns.complete(command, command.input)
    assert outcome.record is not None and outcome.record.status is AgentStatus.COMPLETED, outcome.record.error
    assert outcome.record.result == {"items": [1]}
