"""The chaos harness's workload (bench/chaos.py): agents whose end state depends on their inputs only.

Loaded by the harness's processors and workers (`--app chaos_agents --app-dir bench`),
written against the public authoring API only. Every agent keeps steps, durable timers,
children and an event-driven loop with locals in flight, and records each thing it
applied exactly where a second application would show: `steps` and `ticks` are
appended by one sequential coroutine each (a duplicate is a repeated entry), pokes
finish in any order so they are keyed by number and counted (`poke_calls` above
`len(pokes)` is a poke applied twice). Nothing in the end state depends on timing, so a
calm run and a run under SIGKILLs must end identical.

A step writes a marker file while it runs (`CHAOS_MARKS`, named `<worker pid>~<agent>~<label>~<nonce>`),
so the harness can kill a processor exactly while a worker is inside one of its steps.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from agentstream.agents import RetryPolicy, agent, condition, function, import_functions

MARKS_ENV = "CHAOS_MARKS"
STEP_TIMEOUT = timedelta(seconds=5)
# Issue 7 item 1's policy: short constant backoff, practically unlimited attempts.
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=20), backoff_coefficient=1.0, max_attempts=3000)
CHILD_EVERY = 2  # a child after every second round
CHILD_DELTA = 100
POKE_DELTA = 1000
MODULUS = 1_000_003


class Call(BaseModel):
    """A step's input: `agent` and `label` only name the marker; the output is value + delta."""

    agent: str
    label: str
    value: int
    delta: int


class Plan(BaseModel):
    """An agent's input. `pause_ms` (timer length) changes no state: the harness may vary it per run."""

    rounds: int
    ticks: int
    pokes: int
    pause_ms: int


class Job(BaseModel):
    value: int
    pause_ms: int


@contextmanager
def _marker(call: Call) -> Iterator[None]:
    """A file that exists exactly while this worker process is inside the step (not if it dies)."""
    folder = os.environ.get(MARKS_ENV)
    if not folder:
        yield
        return
    path = Path(folder) / f"{os.getpid()}~{call.agent}~{call.label}~{uuid.uuid4().hex[:8]}"
    path.touch()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


with import_functions():

    @function
    async def slow_add(call: Call) -> int:
        """Blocks 50-500 ms, long enough for a kill to land while a worker is inside it."""
        with _marker(call):
            await asyncio.sleep(random.uniform(0.05, 0.5))
        return call.value + call.delta


def _step_call(agent_id: str, label: str, value: int, delta: int) -> Call:
    return Call(agent=agent_id, label=label, value=value, delta=delta)


@agent.defn()
class ChaosChild:
    """A child: one slow step, then a durable timer."""

    @agent.run
    async def run(self, job: Job) -> int:
        me = agent.agent_info().agent_id
        value: int = await agent.step(
            function=slow_add, function_input=_step_call(me, "child", job.value, CHILD_DELTA),
            start_to_close_timeout=STEP_TIMEOUT, retry_policy=RETRY,
        )
        await agent.sleep(timedelta(milliseconds=job.pause_ms))
        return value


@agent.defn()
class ChaosAgent:
    """Rounds of step + timer (+ child), then a loop over `tick` events; `poke` handlers await steps."""

    def __init__(self) -> None:
        self.total: int = 0
        self.steps: list[str] = []  # run's steps and children, in order
        self.inbox: list[int] = []
        self.ticks: list[int] = []  # ticks the loop consumed, in order
        self.pokes: dict[str, int] = {}  # poke number -> its step's output
        self.poke_calls: int = 0  # poke handlers that finished

    @agent.event
    async def tick(self, n: int) -> None:
        self.inbox.append(n)

    @agent.event
    async def poke(self, n: int) -> int:
        """Issue 7 item 1's shape: an event handler awaiting a slow step with a timeout and retries."""
        me = agent.agent_info().agent_id
        value: int = await agent.step(
            function=slow_add, function_input=_step_call(me, f"poke{n}", n, POKE_DELTA),
            start_to_close_timeout=STEP_TIMEOUT, retry_policy=RETRY,
        )
        self.pokes[str(n)] = value
        self.poke_calls += 1
        return value

    @agent.run
    async def run(self, plan: Plan) -> dict[str, int]:
        me = agent.agent_info().agent_id
        carried = 0  # a local alive across every await of the rounds
        for r in range(plan.rounds):
            self.total = await agent.step(
                function=slow_add, function_input=_step_call(me, f"step{r}", self.total, r + 1),
                start_to_close_timeout=STEP_TIMEOUT, retry_policy=RETRY,
            )
            carried += self.total
            self.steps.append(f"step{r}={self.total}")
            await agent.sleep(timedelta(milliseconds=plan.pause_ms))
            if r % CHILD_EVERY == CHILD_EVERY - 1:
                got: int = await agent.child_execute(
                    agent=ChaosChild, agent_id=child_id(me, r),
                    agent_input=Job(value=self.total, pause_ms=plan.pause_ms),
                )
                carried += got
                self.steps.append(f"child{r}={got}")
        seen, acc = 0, 0  # locals in flight while the loop waits for events
        while seen < plan.ticks:
            await condition(lambda: len(self.inbox) > 0)
            n = self.inbox.pop(0)
            seen += 1
            acc = (acc * 31 + n + 1) % MODULUS
            self.ticks.append(n)
        await condition(lambda: self.poke_calls >= plan.pokes)
        return {"total": self.total, "carried": carried, "seen": seen, "acc": acc, "pokes": sum(self.pokes.values())}


def child_id(parent: str, round_: int) -> str:
    return f"{parent}-c{round_}"


def children_of(parent: str, plan: Plan) -> list[str]:
    return [child_id(parent, r) for r in range(plan.rounds) if r % CHILD_EVERY == CHILD_EVERY - 1]


def expected_result(plan: Plan) -> dict[str, int]:
    """What `ChaosAgent.run` returns for `plan` when every input counts exactly once."""
    total = carried = 0
    for r in range(plan.rounds):
        total += r + 1
        carried += total
        if r % CHILD_EVERY == CHILD_EVERY - 1:
            carried += total + CHILD_DELTA
    acc = 0
    for n in range(plan.ticks):
        acc = (acc * 31 + n + 1) % MODULUS
    pokes = sum(n + POKE_DELTA for n in range(plan.pokes))
    return {"total": total, "carried": carried, "seen": plan.ticks, "acc": acc, "pokes": pokes}
