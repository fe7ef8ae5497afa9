"""Agents for the HTTP input tests: the Recorder (events) and one whose run takes a typed input."""

from __future__ import annotations

from recorder import Recorder  # noqa: F401  (registers it: this app serves both)

from agentstream.agents import agent


@agent.defn()
class Countdown:
    @agent.run
    async def run(self, start: int) -> int:
        return start
