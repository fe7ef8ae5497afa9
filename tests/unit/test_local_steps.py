"""Local steps (`agent.step(..., local=True)`): run by the processor's runner inside the turn
that asked, journaled with it; the same retries and timeouts as on a worker."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

from agentstream.agents import RetryPolicy, StepFailedError, agent, condition, function
from agentstream.agents.testing import replay_record
from agentstream.streams.engine import DurableEngine, EngineConfig
from agentstream.streams.processor.local_steps import ProcessorLocalSteps
from agentstream.topics import AgentStatus, StepCommand

from turns import Turns

calls: Counter[str] = Counter()
flaky_failures_left = {"n": 0}
FAST_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), max_attempts=5)


@function
async def local_double(n: int) -> int:
    calls["local_double"] += 1
    return n * 2


@function
async def local_flaky(n: int) -> int:
    calls["local_flaky"] += 1
    if flaky_failures_left["n"] > 0:
        flaky_failures_left["n"] -= 1
        raise RuntimeError("not yet")
    return n + 100


@function
async def local_hangs(n: int) -> int:
    await asyncio.sleep(30)
    return n


@agent.defn(name="Local.Three")
class Three:
    """Three sequential local steps, then waits for `done` with their outputs in a field."""

    def __init__(self) -> None:
        self.out: list[int] = []
        self.done = False

    @agent.event
    async def done(self) -> None:
        self.done = True

    @agent.run
    async def run(self, n: int) -> list[int]:
        for i in range(3):
            self.out.append(await agent.step(function=local_double, function_input=n + i, local=True))
        await condition(lambda: self.done)
        return self.out


@agent.defn(name="Local.Mixed")
class Mixed:
    """A local step, a worker step, then two local steps started together."""

    @agent.run
    async def run(self, n: int) -> list[int]:
        first = await agent.step(function=local_double, function_input=n, local=True)
        second = await agent.step(function="remote_only", function_input=first)
        pair = await asyncio.gather(
            agent.step(function=local_double, function_input=second, local=True),
            agent.step(function=local_double, function_input=second + 1, local=True),
        )
        return [first, second, *pair]


@agent.defn(name="Local.Flaky")
class Flaky:
    @agent.run
    async def run(self, n: int) -> int:
        return await agent.step(function=local_flaky, function_input=n, local=True, retry_policy=FAST_RETRY)  # type: ignore[no-any-return]


@agent.defn(name="Local.Hangs")
class Hangs:
    @agent.run
    async def run(self, n: int) -> str:
        try:
            await agent.step(function=local_hangs, function_input=n, local=True, start_to_close_timeout=0.2,
                             retry_policy=RetryPolicy(max_attempts=1))
        except StepFailedError as exc:
            return f"gave up: {exc.error_type}"
        return "finished"


def local_turns() -> Turns:
    return Turns(engine=DurableEngine(EngineConfig(), local_steps=ProcessorLocalSteps()))


def step_commands(outcome: Any) -> list[dict[str, Any]]:
    return [item.value for item in outcome.publish if item.topic == "step-commands"]


async def test_three_local_steps_are_one_turn_one_write_and_nothing_for_a_worker() -> None:
    turns = local_turns()
    before = calls["local_double"]
    outcome = await turns.schedule("Local.Three", "l-1", 5)
    assert outcome.label == "applied" and outcome.stored is not None
    assert step_commands(outcome) == []
    assert calls["local_double"] - before == 3
    record = turns.record("l-1")
    assert record.fields["out"] == [10, 12, 14] and record.steps == {} and record.timers == {}
    assert [s.outcome for s in outcome.facts.steps] == ["completed"] * 3
    assert replay_record(record).ok  # the journal (or its compacted base) replays on this code

    turns.forget_live_state()  # a restart: the next turn replays the record; the steps do not run again
    done = await turns.send("l-1", "done")
    assert calls["local_double"] - before == 3
    assert turns.record("l-1").status is AgentStatus.COMPLETED
    assert [u.result for u in done.updates if u.status is AgentStatus.COMPLETED] == [[10, 12, 14]]


async def test_without_a_runner_a_local_step_goes_to_a_worker_like_any_other() -> None:
    turns = Turns()
    outcome = await turns.schedule("Local.Three", "l-2", 1)
    commands = step_commands(outcome)
    assert [c["function"] for c in commands] == ["local_double"]
    await turns.complete(StepCommand.model_validate(commands[0]), 2)
    assert turns.record("l-2").fields["out"] == [2]


async def test_a_function_the_processor_lacks_goes_to_a_worker_and_local_ones_resume_after_it() -> None:
    turns = local_turns()
    outcome = await turns.schedule("Local.Mixed", "l-3", 3)
    commands = step_commands(outcome)
    assert [c["function"] for c in commands] == ["remote_only"]  # the first local step already ran
    finished = await turns.complete(StepCommand.model_validate(commands[0]), 7)
    assert step_commands(finished) == []  # both gathered local steps ran in the result's turn
    assert turns.record("l-3").status is AgentStatus.COMPLETED
    assert turns.record("l-3").result == [6, 7, 14, 16]


async def test_a_failed_local_attempt_is_retried_by_its_durable_backoff_timer() -> None:
    turns = local_turns()
    flaky_failures_left["n"] = 2
    before = calls["local_flaky"]
    outcome = await turns.schedule("Local.Flaky", "l-4", 1)
    assert [s.outcome for s in outcome.facts.steps] == ["retried"]
    record = turns.record("l-4")
    assert list(record.timers) == ["retry:1"] and step_commands(outcome) == []
    await turns.fire("l-4", "retry:1")  # the second attempt fails too
    assert list(turns.record("l-4").timers) == ["retry:1"]
    last = await turns.fire("l-4", "retry:1")
    assert calls["local_flaky"] - before == 3
    assert turns.record("l-4").status is AgentStatus.COMPLETED and turns.record("l-4").result == 101
    assert [s.outcome for s in last.facts.steps] == ["completed"]


async def test_a_local_step_past_its_start_to_close_timeout_fails_instead_of_holding_the_processor() -> None:
    turns = local_turns()
    outcome = await asyncio.wait_for(turns.schedule("Local.Hangs", "l-5", 1), timeout=10)
    assert outcome.label == "applied"
    assert turns.record("l-5").result == "gave up: StartToCloseTimeout"


async def test_a_local_step_without_a_timeout_is_bounded_by_the_runners_default() -> None:
    runner = ProcessorLocalSteps(default_timeout_s=0.1)
    command = StepCommand(agent_id="x", run_id="r", step_id="1", function="local_hangs", input=1, attempt=1,
                          task_queue="q")
    result = await asyncio.wait_for(runner.run(command), timeout=10)
    assert not result.ok and result.error is not None and result.error.type == "StartToCloseTimeout"
    assert runner.runs("local_double") and not runner.runs("remote_only")
