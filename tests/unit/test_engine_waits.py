"""The record says what each coroutine of a running agent waits on (`AgentRecord.waiting`),
so `agentstream state` tells a stalled agent from an idle one and points at the line."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from agentstream.agents import agent, condition, function
from agentstream.topics import StepCommand

from turns import Turns


@function
async def waits_fetch(item: str) -> str:
    return item


@agent.defn(name="Waits.Many")
class Many:
    """`run` waits on each kind in turn; `approve` waits on its own condition meanwhile."""

    def __init__(self) -> None:
        self.go = False
        self.approved = False

    @agent.event
    async def start(self) -> None:
        self.go = True

    @agent.event
    async def approve(self) -> bool:
        await condition(lambda: self.approved, timeout=timedelta(hours=1))
        return True

    @agent.event
    async def allow(self) -> None:
        self.approved = True

    @agent.run
    async def run(self) -> str:
        await condition(lambda: self.go)
        fetched = await agent.step(function=waits_fetch, function_input="x")
        await agent.sleep(timedelta(minutes=5))
        await asyncio.sleep(60)
        await agent.child_execute(agent="Waits.Child", agent_id="waits-child")
        return str(fetched)


@agent.defn(name="Waits.Child")
class Child:
    @agent.run
    async def run(self) -> str:
        await condition(lambda: False)
        return "never"


def line(code: str, function: str) -> str:
    """`where` for the one line of this file that holds `code`."""
    [number] = [n for n, text in enumerate(open(__file__).read().splitlines(), 1) if text.strip() == code]
    return f"test_engine_waits.py:{number} in {function}"


def waiting(turns: Turns, agent_id: str) -> list[tuple[str, str, str, str]]:
    return [(w.coroutine, w.on, w.detail, w.where) for w in turns.record(agent_id).waiting]


def only_step(outcome: Any) -> StepCommand:
    [command] = outcome.commands
    assert isinstance(command, StepCommand)
    return command


async def test_each_coroutine_shows_what_it_waits_on_and_where() -> None:
    turns = Turns()
    await turns.schedule("Waits.Many", "m")
    code = "await condition(lambda: self.go)"
    assert waiting(turns, "m") == [("run", "condition", code, line(code, "Many.run"))]

    await turns.send("m", "approve")  # a handler that waits alongside run
    [run, handler] = turns.record("m").waiting
    code = "await condition(lambda: self.approved, timeout=timedelta(hours=1))"
    assert (handler.coroutine, handler.on, handler.where) == ("approve", "condition", line(code, "Many.approve"))
    assert handler.detail.startswith(f"{code} (times out at ")

    step = only_step(await turns.send("m", "start"))
    code = 'fetched = await agent.step(function=waits_fetch, function_input="x")'
    assert waiting(turns, "m")[0] == ("run", "step", "waits_fetch (step 2)", line(code, "Many.run"))

    await turns.send("m", "allow")  # the handler ends: only run is left
    await turns.complete(step, "x")
    [(coroutine, on, detail, where)] = waiting(turns, "m")
    assert (coroutine, on, where) == ("run", "timer", line("await agent.sleep(timedelta(minutes=5))", "Many.run"))
    assert detail.startswith("until ")

    turns.forget_live_state()  # as after a restart: the record still says it, and a replay keeps it
    [timer_id] = turns.record("m").timers
    await turns.fire("m", timer_id)
    [(coroutine, on, detail, where)] = waiting(turns, "m")
    assert (coroutine, on, where) == ("run", "timer", line("await asyncio.sleep(60)", "Many.run"))  # asyncio.sleep

    [timer_id] = turns.record("m").timers
    await turns.fire("m", timer_id)
    code = 'await agent.child_execute(agent="Waits.Child", agent_id="waits-child")'
    assert waiting(turns, "m") == [("run", "child", "Waits.Child waits-child", line(code, "Many.run"))]


async def test_an_agent_that_ended_waits_on_nothing() -> None:
    turns = Turns()
    await turns.schedule("Waits.Child", "c")
    assert [w.on for w in turns.record("c").waiting] == ["condition"]
    await turns.apply(_cancel("c", turns.record("c").run_id))
    record = turns.record("c")
    assert record.status.value == "cancelled" and record.waiting == []


def _cancel(agent_id: str, run_id: str) -> Any:
    from agentstream.topics import CancelAgent

    return CancelAgent(agent_id=agent_id, run_id=run_id, reason="test")
