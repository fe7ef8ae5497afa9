"""`replay_record`, the users' replayer: every committed golden record replays with the current
code; a record whose agent's code changed incompatibly, or whose type is gone, is reported (not
raised); one taken from a test environment replays too."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agentstream.agents import agent
from agentstream.agents.testing import AgentTestEnvironment, replay_record
from agentstream.streams.engine import EngineConfig

from golden import make_records
from golden.agents import Pipeline, golden_fetch

GOLDEN_FILES = sorted(make_records.RECORDS.glob("*.json"))


@agent.defn(name="Replayer.PipelineChanged")
class PipelineChanged(Pipeline):
    """Golden.Pipeline after an edit a deploy must not ship: it skips straight to the second fetch."""

    @agent.run
    async def run(self, order: Any) -> Any:
        self.token = agent.uuid()
        self.lucky = agent.random()
        return await agent.step(function=golden_fetch, function_input=f"{order['id']}-again")


@agent.defn(name="Replayer.Napper")
class Napper:
    def __init__(self) -> None:
        self.naps = 0

    @agent.run
    async def run(self, naps: int) -> int:
        for _ in range(naps):
            await agent.sleep(timedelta(hours=1))
            self.naps += 1
        return self.naps


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])
def test_every_committed_golden_record_replays_with_the_current_code(path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    report = replay_record(doc["stored"], EngineConfig(task_queue=doc["engine"]["task_queue"]))
    assert report.ok, str(report)


def test_a_changed_agent_and_a_missing_type_are_reported_with_the_reason() -> None:
    doc = json.loads((make_records.RECORDS / "pipeline-awaiting-second-step.json").read_text(encoding="utf-8"))
    stored = json.loads(doc["stored"])
    config = EngineConfig(task_queue=doc["engine"]["task_queue"])
    changed = replay_record({**stored, "agent_type": "Replayer.PipelineChanged"}, config)
    assert not changed.ok and (changed.problem or "").startswith("NondeterminismError:"), str(changed)
    assert "journal recorded" in (changed.problem or "")
    gone = replay_record({**stored, "agent_type": "Replayer.Deleted"}, config)
    assert not gone.ok and "no agent type 'Replayer.Deleted'" in (gone.problem or "")


async def test_a_record_from_a_test_environment_replays_before_and_after_it_ends() -> None:
    async with AgentTestEnvironment() as env:
        await env.schedule(Napper, "n-1", 3)
        await env.skip(timedelta(hours=1, minutes=30))
        running = env.record("n-1")
        assert running.status.value == "running" and running.fields["naps"] == 1
        assert replay_record(running.to_bytes()).ok
        assert await env.result("n-1") == 3
        ended = replay_record(env.record("n-1"))
        assert ended.ok and ended.status == "completed"
