"""An example agent in the Restack shape: tasks arrive as events, `run` works through
them with a durable step each, and `shutdown` stops it. `configure` (optional) changes
how often a failing step is tried.

The README's commands drive it as it is: `schedule TaskProcessor`, `send add_task`,
`send shutdown`.

Run it with `agentstream dev --app examples.taskprocessor` (or `agentstream demo`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from agentstream.agents import RetryPolicy, agent, condition, function, import_functions, log


class Task(BaseModel):
    id: str
    action: str = "process"


class Config(BaseModel):
    max_retries: int = 3


with import_functions():  # in a real project: from src.functions.process import process_item

    @function
    async def process_item(task: Task) -> dict[str, str]:
        """The step that workers run for each task."""
        return {"id": task.id, "result": f"{task.action}: done"}


@agent.defn()
class TaskProcessor:
    # Typed fields are declared at class level, where the runtime can read the types
    # back after a restart (an annotation on `self.x` inside __init__ is not kept).
    config: Config
    tasks: list[Task]
    results: list[dict[str, str]]

    def __init__(self) -> None:
        self.config = Config()  # `configure` may replace it; nothing waits for it
        self.tasks = []
        self.results = []
        self.completed = 0
        self.failed = 0
        self.end = False

    @agent.event
    async def configure(self, config: Config) -> int:
        self.config = config
        log.info("configured", max_retries=config.max_retries)
        return config.max_retries

    @agent.event
    async def add_task(self, task: Task) -> int:
        self.tasks.append(task)
        return len(self.tasks)

    @agent.event
    async def shutdown(self) -> bool:
        self.end = True
        return True

    @agent.run
    async def run(self) -> dict[str, Any]:
        while not self.end:
            await condition(lambda: bool(self.tasks) or self.end or agent.should_continue_as_new())
            if agent.should_continue_as_new():
                agent.agent_continue_as_new()
            while self.tasks:
                await self.process(self.tasks.pop(0))
        return {"status": "ended", "completed": self.completed, "failed": self.failed}

    async def process(self, task: Task) -> None:
        """One task, in its own frame: no local of it outlives the task (locals across a
        wait are state too, and would keep the idle agent from being compacted)."""
        try:
            result = await agent.step(
                function=process_item,
                function_input=task,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(max_attempts=self.config.max_retries, initial_interval=timedelta(seconds=0.2)),
            )
            self.results.append(result)
            self.completed += 1
            log.info("task complete", task_id=task.id)
        except Exception as exc:
            self.failed += 1
            log.error("task failed", task_id=task.id, error=repr(exc))
