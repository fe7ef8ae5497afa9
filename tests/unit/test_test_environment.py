"""`AgentTestEnvironment`: users' agents turn by turn in-process, steps run by their functions,
durable timers fired by skipping time (no real waiting), rejections raised as the client raises them."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import BaseModel

from agentstream.agents import (
    AgentFailedError,
    InputRejectedError,
    RetryableError,
    RetryPolicy,
    TimeoutError,
    agent,
    condition,
    function,
)
from agentstream.agents.testing import AgentTestEnvironment

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


class Task(BaseModel):
    id: str


@function
async def kit_process(task: Task) -> str:
    return f"done {task.id}"


FLAKY_CALLS: list[int] = []


@function
async def kit_flaky(n: int) -> int:
    FLAKY_CALLS.append(n)
    if len(FLAKY_CALLS) < 3:
        raise RetryableError("not yet")
    return n * 10


@agent.defn(name="Kit.Tasks")
class Tasks:
    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.done: list[str] = []
        self.end = False

    @agent.event
    async def add_task(self, task: Task) -> None:
        self.tasks.append(task)

    @agent.event
    async def shutdown(self) -> None:
        self.end = True

    @agent.run
    async def run(self) -> list[str]:
        while not self.end:
            await condition(lambda: bool(self.tasks) or self.end)
            while self.tasks:
                self.done.append(await agent.step(function=kit_process, function_input=self.tasks.pop(0),
                                                  start_to_close_timeout=timedelta(seconds=30),
                                                  schedule_to_start_timeout=timedelta(minutes=1)))
        return self.done


@agent.defn(name="Kit.Reminder")
class Reminder:
    def __init__(self) -> None:
        self.log: list[str] = []

    @agent.run
    async def run(self, hours: int) -> list[str]:
        self.log.append(f"start {agent.now():%H:%M}")
        await agent.sleep(timedelta(hours=hours))
        self.log.append(f"woke {agent.now():%H:%M}")
        value = await agent.step(function=kit_flaky, function_input=4,
                                 retry_policy=RetryPolicy(max_attempts=5, initial_interval=timedelta(minutes=10),
                                                          backoff_coefficient=2.0))
        self.log.append(f"flaky gave {value} at {agent.now():%H:%M}")
        return self.log


async def test_the_readme_style_agent_runs_its_steps_and_returns() -> None:
    async with AgentTestEnvironment(start=T0) as env:  # months before the real clock: steps go by the test's
        await env.schedule(Tasks, "t-1")
        assert await env.send("t-1", "add_task", {"id": "a"}) == "applied"
        await env.send("t-1", "add_task", Task(id="b"))
        assert env.state("t-1")["fields"]["done"] == ["done a", "done b"]  # each step ran when it was issued
        await env.send("t-1", "shutdown")
        assert await env.result("t-1") == ["done a", "done b"]
        assert [u.status.value for u in env.updates if u.agent_id == "t-1"] == ["running", "completed"]
        assert [c.function for c in env.steps_run] == ["kit_process", "kit_process"]


async def test_rejections_raise_with_the_engines_reason_and_duplicates_say_so() -> None:
    async with AgentTestEnvironment(start=T0) as env:
        await env.schedule("Kit.Tasks", "t-2")
        with pytest.raises(InputRejectedError) as typo:
            await env.send("t-2", "add_tsak", {"id": "a"})
        assert typo.value.reason_code == "unknown_event" and "add_task" in (typo.value.reason or "")
        with pytest.raises(InputRejectedError) as invalid:
            await env.send("t-2", "add_task", {"name": "a"})
        assert invalid.value.reason_code == "invalid_payload"
        with pytest.raises(InputRejectedError) as again:
            await env.schedule("Kit.Tasks", "t-2")
        assert again.value.reason_code == "already_running"
        assert await env.send("t-2", "add_task", {"id": "k"}, idempotency_key="k1") == "applied"
        assert await env.send("t-2", "add_task", {"id": "k"}, idempotency_key="k1") == "duplicate"
        assert [d.reason_code for d in env.dead_letters] == ["unknown_event", "invalid_payload", "already_running"]


async def test_time_is_skipped_to_each_timer_and_retry_back_off_without_waiting() -> None:
    FLAKY_CALLS.clear()
    started = time.monotonic()
    async with AgentTestEnvironment(start=T0) as env:
        await env.schedule(Reminder, "r-1", 5)
        await env.skip(timedelta(hours=4))
        assert env.record("r-1").fields["log"] == ["start 08:00"]  # 4 of its 5 hours: still asleep
        log = await env.result("r-1")
    # woke at 13:00; two failed attempts, retried 10 then 20 minutes later
    assert log == ["start 08:00", "woke 13:00", "flaky gave 40 at 13:30"]
    assert FLAKY_CALLS == [4, 4, 4]
    assert time.monotonic() - started < 30  # five and a half hours of agent time, no real waiting


async def test_an_agent_waiting_for_input_only_the_test_can_send_is_reported_not_waited_for() -> None:
    async with AgentTestEnvironment(start=T0) as env:
        await env.schedule(Tasks, "t-3")
        with pytest.raises(TimeoutError) as waiting:
            await env.result("t-3")
        assert "waits for input: run on condition" in str(waiting.value)
        await env.cancel("t-3")
        with pytest.raises(AgentFailedError) as cancelled:
            await env.result("t-3")
        assert cancelled.value.status == "cancelled"
