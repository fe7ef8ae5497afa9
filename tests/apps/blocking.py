"""An agent whose handler blocks the event loop, loaded with --app blocking (no worker runs):
the blocked-turn test runs it in a real processor with a short turn time limit."""

from __future__ import annotations

import time

from agentstream.agents import agent, condition


@agent.defn(name="Blocking")
class Blocking:
    def __init__(self) -> None:
        self.notes = 0
        self.done = False

    @agent.event
    async def block(self, seconds: float) -> None:
        time.sleep(seconds)  # the mistake under test: blocking code in agent code
        self.notes += 100  # never kept: the turn ran past its limit

    @agent.event
    async def note(self) -> int:
        self.notes += 1
        return self.notes

    @agent.run
    async def run(self) -> None:
        await condition(lambda: self.done)
