"""The benchmark's agent types and step functions.

Loaded by the benchmark's processors and workers (`--app agents --app-dir bench`) and
imported in-process by the engine-only measurement. Written against the public
authoring API only, the way a user writes agents.
"""

from __future__ import annotations

from agentstream.agents import agent, condition, function, import_functions

with import_functions():

    @function
    async def bump(value: int) -> int:
        """A trivial step: the benchmark measures the platform, not the function."""
        return value + 1


@agent.defn()
class BenchCounter:
    """Long-lived agent whose events update fields while `run` waits on a condition."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.end = False

    @agent.event
    async def add(self, n: int) -> int:
        self.count += 1
        self.total += n
        return self.count

    @agent.event
    async def end(self) -> None:
        self.end = True

    @agent.run
    async def run(self) -> int:
        await condition(lambda: self.end)
        return self.count


@agent.defn()
class BenchThreeSteps:
    """One durable invocation: three sequential steps, then return."""

    @agent.run
    async def run(self, start: int) -> int:
        value = start
        for _ in range(3):
            value = await agent.step(function=bump, function_input=value)
        return value


@agent.defn()
class BenchStepLoop:
    """`steps` sequential steps in a loop: the steps/s load."""

    @agent.run
    async def run(self, steps: int) -> int:
        value = 0
        for _ in range(steps):
            value = await agent.step(function=bump, function_input=value)
        return value
