"""Inputs of one agent apply in order, one after another; other agents' go on meanwhile (lanes.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from agentstream.streams.processor.lanes import AgentLanes


class Inputs:
    """Inputs whose application waits until the test lets it finish."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.durable: dict[str, asyncio.Event] = {}

    def begin(self, name: str) -> Callable[[], Awaitable[tuple[str, Awaitable[None]]]]:
        self.gates[name] = asyncio.Event()
        self.durable[name] = asyncio.Event()

        async def apply() -> tuple[str, Awaitable[None]]:
            self.started.append(name)
            await self.gates[name].wait()
            return "applied", self.durable[name].wait()

        return apply


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_agents_next_input_begins_only_once_its_previous_one_was_applied() -> None:
    lanes, inputs = AgentLanes(), Inputs()
    first = lanes.start(b"a", inputs.begin("a1"))
    second = lanes.start(b"a", inputs.begin("a2"))
    other = lanes.start(b"b", inputs.begin("b1"))
    await settle()
    assert inputs.started == ["a1", "b1"]  # b does not wait for a
    inputs.gates["a1"].set()
    await settle()
    assert inputs.started == ["a1", "b1", "a2"]  # applied, not yet durable: the next may begin
    assert not first.done()  # the task resolves once the input is durable
    inputs.durable["a1"].set()
    await asyncio.wait_for(first, 1)
    for name in ("a2", "b1"):
        inputs.gates[name].set()
        inputs.durable[name].set()
    await asyncio.wait_for(asyncio.gather(second, other), 1)


async def test_idle_waits_for_every_input_started_to_be_applied() -> None:
    lanes, inputs = AgentLanes(), Inputs()
    lanes.start(b"a", inputs.begin("a1"))
    lanes.start(b"a", inputs.begin("a2"))
    idle = asyncio.ensure_future(lanes.idle())
    await settle()
    assert not idle.done()
    inputs.gates["a1"].set()
    await settle()
    assert not idle.done()
    inputs.gates["a2"].set()
    await asyncio.wait_for(idle, 1)


async def test_a_cancelled_input_does_not_hold_up_its_agents_later_inputs() -> None:
    lanes, inputs = AgentLanes(), Inputs()
    first = lanes.start(b"a", inputs.begin("a1"))
    first.cancel()  # before it ever ran (a window closed by a stop)
    lanes.start(b"a", inputs.begin("a2"))
    await settle()
    assert inputs.started == ["a2"]
