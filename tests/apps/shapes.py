"""Agents in the shapes of the Restack reference (TaskProcessor, messages/end, parent and
child, the should_continue_as_new loop), used by the integration and crash tests.

They import from agentstream.agents only, the way an agent author writes them.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from agentstream.agents import RetryableError, RetryPolicy, agent, condition, function, import_functions, log


class Task(BaseModel):
    id: str


with import_functions():

    @function
    async def process_flaky(task: Task) -> dict[str, str]:
        """Fails transiently 30% of the time, like a busy downstream service."""
        if random.random() < 0.3:
            raise RetryableError(f"service busy for {task.id}")
        return {"id": task.id, "status": "processed"}

    @function
    async def add_one(value: int) -> int:
        return value + 1

    @function
    def greet(name: str) -> str:
        return f"hello {name}"


@agent.defn()
class FlakyTasks:
    """The TaskProcessor shape: configure, add_task and end events; run works the queue."""

    tasks: list[Task]  # at class level: the runtime restores the models from it after a restart

    def __init__(self) -> None:
        self.config: dict[str, Any] | None = None
        self.tasks = []
        self.done_ids: list[str] = []
        self.failed = 0
        self.end = False

    @agent.event
    async def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    @agent.event
    async def add_task(self, task: Task) -> int:
        self.tasks.append(task)
        return len(self.tasks)

    @agent.event
    async def end(self) -> bool:
        self.end = True
        return True

    @agent.run
    async def run(self) -> dict[str, Any]:
        await condition(lambda: self.config is not None)
        while not self.end or self.tasks:
            await condition(lambda: len(self.tasks) > 0 or self.end or agent.should_continue_as_new())
            if agent.should_continue_as_new():
                agent.agent_continue_as_new()
            while self.tasks:
                task = self.tasks.pop(0)
                try:
                    result = await agent.step(
                        function=process_flaky,
                        function_input=task,
                        start_to_close_timeout=timedelta(seconds=30),
                        retry_policy=RetryPolicy(
                            initial_interval=timedelta(milliseconds=50), max_interval=timedelta(milliseconds=400)
                        ),
                    )
                    self.done_ids.append(result["id"])
                except Exception as exc:
                    self.failed += 1
                    log.error("task failed", task_id=task.id, error=str(exc))
        return {"completed": len(self.done_ids), "failed": self.failed}


@agent.defn()
class Chat:
    """The messages/end shape."""

    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []
        self.end = False

    @agent.event
    async def messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        self.messages.extend(messages)
        return self.messages

    @agent.event
    async def end(self) -> bool:
        self.end = True
        return True

    @agent.run
    async def run(self) -> int:
        await condition(lambda: self.end)
        return len(self.messages)


@agent.defn()
class Greeter:
    @agent.run
    async def run(self, name: str) -> str:
        return await agent.step(function=greet, function_input=name)


@agent.defn()
class Waiter:
    """A child that waits until it is told to stop (or cancelled)."""

    def __init__(self) -> None:
        self.stop = False

    @agent.event
    async def stop(self) -> None:
        self.stop = True

    @agent.run
    async def run(self) -> str:
        await condition(lambda: self.stop)
        return "stopped"


@agent.defn()
class Fanout:
    """The parent/child shape: child_start one waiter, child_execute a greeter per name."""

    def __init__(self) -> None:
        self.waiter: str | None = None
        self.greetings: list[str] = []

    @agent.run
    async def run(self, names: list[str]) -> list[str]:
        info = agent.agent_info()
        handle = await agent.child_start(agent=Waiter, agent_id=f"{info.agent_id}-waiter")
        self.waiter = handle.agent_id
        for name in names:
            self.greetings.append(
                await agent.child_execute(agent=Greeter, agent_id=f"{info.agent_id}-{name}", agent_input=name)
            )
        return self.greetings


@agent.defn()
class Family:
    """Starts two waiters and waits for a third: still running until someone cancels it."""

    @agent.run
    async def run(self) -> str:
        me = agent.agent_info().agent_id
        for n in (1, 2):
            await agent.child_start(agent=Waiter, agent_id=f"{me}-kid{n}")
        return await agent.child_execute(agent=Waiter, agent_id=f"{me}-kid3")


@agent.defn()
class Sleeper:
    @agent.run
    async def run(self, seconds: float) -> str:
        started = agent.now()
        await agent.sleep(seconds)
        return f"slept {(agent.now() - started).total_seconds():.1f}s"


@agent.defn()
class Doubler:
    @agent.run
    async def run(self, value: int) -> int:
        return await agent.step(function=add_one, function_input=value * 2)


class Plan(BaseModel):
    rounds: int
    pause_ms: int = 300


@agent.defn()
class Workload:
    """The crash suite's agent: steps, durable timers and children, then waits for `finish`."""

    def __init__(self) -> None:
        self.total = 0
        self.applied: list[str] = []
        self.finish = False

    @agent.event
    async def finish(self) -> None:
        self.finish = True

    @agent.run
    async def run(self, plan: Plan) -> dict[str, Any]:
        for round_ in range(plan.rounds):
            self.total = await agent.step(
                function=add_one, function_input=self.total, start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
            )
            self.applied.append(f"step{round_}={self.total}")
            await agent.sleep(timedelta(milliseconds=plan.pause_ms))
            if round_ % 3 == 2:
                doubled = await agent.child_execute(agent=Doubler, agent_input=self.total)
                self.applied.append(f"child{round_}={doubled}")
        await condition(lambda: self.finish)
        return {"total": self.total, "applied": len(self.applied)}
