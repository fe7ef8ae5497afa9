"""An example agent: takes configuration and tasks as events and keeps them in its state.

Run it with `agentstream dev --app examples.taskprocessor`.
"""

from __future__ import annotations

from pydantic import BaseModel

from agentstream.agents import agent, function, log


class Task(BaseModel):
    id: str
    action: str = "process"


class Config(BaseModel):
    max_retries: int = 3


@function
async def process_item(task: Task) -> dict[str, str]:
    """A step function that workers run (the durable engine calls it from agents)."""
    return {"id": task.id, "result": f"{task.action}ed"}


@agent.defn()
class TaskProcessor:
    def __init__(self) -> None:
        self.max_retries = 3
        self.tasks: list[dict[str, str]] = []
        self.ended = False

    @agent.event
    async def configure(self, config: Config) -> int:
        self.max_retries = config.max_retries
        return self.max_retries

    @agent.event
    async def add_task(self, task: Task) -> int:
        self.tasks.append(task.model_dump())
        log.info("task queued", task_id=task.id)
        return len(self.tasks)

    @agent.event
    async def end(self) -> bool:
        self.ended = True
        return True

    @agent.run
    async def run(self) -> None:
        """The durable engine runs this; the first engine applies events only."""
