"""The fuzz harness's real agents (bench/fuzz.py, tests/unit/test_fuzz_handler.py).

Loaded by the harness's processor (`--app fuzz_agents --app-dir bench`) and imported
in-process by the unit test. A `FuzzTarget` keeps one of everything a hostile record
can aim at in flight for the whole run: a step (no worker serves its queue; the harness
answers each command itself, as a worker would), a 30-day durable timer, and a child
that never ends. Its fields count exactly the valid inputs it applied, so a hostile
record that slips through, or a valid one applied twice, shows in the end state.
A `FuzzHoard` keeps whatever it is sent in its fields, so that its record can be driven
to the size limit by amounts the harness chooses (bench/fuzz_hoard.py).
"""

from __future__ import annotations

from datetime import timedelta

from agentstream.agents import agent, condition, function, import_functions

TARGET = "FuzzTarget"
KID = "FuzzKid"
HOARD = "FuzzHoard"
STEP_FUNCTION = "fuzz_echo"
EVENTS = ("add", "nap", "adopt")  # everything a FuzzTarget takes; hostile events name none of these
NAP = timedelta(days=30)

with import_functions():

    @function(name=STEP_FUNCTION)
    async def fuzz_echo(value: int) -> int:
        """Never run by a worker in the fuzz runs: the harness sends the results."""
        return value


def kid_id(parent: str) -> str:
    return f"{parent}.kid"


@agent.defn(name=KID)
class FuzzKid:
    """A child that stays running, so that forged child results have a child to aim at."""

    def __init__(self) -> None:
        self.done = False

    @agent.run
    async def run(self, seed: int) -> int:
        await condition(lambda: self.done)
        return seed


@agent.defn(name=TARGET)
class FuzzTarget:
    """`run` loops over steps; `nap` arms a long timer; `adopt` awaits a child for ever."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.outputs: list[int] = []  # each step's output, in order: a result applied twice shows here
        self.naps = 0
        self.kid: int | None = None

    @agent.event
    async def add(self, n: int) -> int:
        self.count += 1
        self.total += n
        return self.count

    @agent.event
    async def nap(self) -> None:
        self.naps += 1
        await agent.sleep(NAP)

    @agent.event
    async def adopt(self) -> None:
        me = agent.agent_info().agent_id
        self.kid = await agent.child_execute(agent=KID, agent_id=kid_id(me), agent_input=1)

    @agent.run
    async def run(self, seed: int) -> None:
        value = seed
        while True:
            value = await agent.step(function=STEP_FUNCTION, function_input=value)
            self.outputs.append(value)


@agent.defn(name=HOARD)
class FuzzHoard:
    """Keeps every blob it is sent (its record grows by about twice each: fields and base),
    until `clear`: the harness grows its record to the limit and back on purpose."""

    def __init__(self) -> None:
        self.kept: list[str] = []

    @agent.event
    async def keep(self, blob: str) -> int:
        self.kept.append(blob)
        return len(self.kept)

    @agent.event
    async def clear(self) -> None:
        self.kept = []

    @agent.run
    async def run(self) -> None:
        await condition(lambda: False)
