"""A handler that blocks, in a real processor: the turn is interrupted at the time limit,
its agent parked as stuck with the input kept, and the processor goes on with other agents,
whichever way the processor isolates agent code (streams/engine/inline_turns.py,
turn_thread.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentstream.agents import AgentClient
from agentstream.streams.settings import Settings

from support import Cluster, get_json, metric, poll

pytestmark = pytest.mark.integration

BLOCK_S = 600.0  # far past the test's own deadlines: only an interruption ends it in time


def state(url: str, agent_id: str) -> dict[str, Any] | None:
    status, body = get_json(f"{url}/agents/{agent_id}", timeout=2)
    return body if status == 200 else None


@pytest.mark.parametrize("isolation", ["inline", "thread"])
async def test_a_blocking_handler_is_stopped_at_the_limit_and_the_processor_goes_on(
    cluster: Cluster, isolation: str
) -> None:
    processor = cluster.processor(app="blocking", env={
        "AGENTSTREAM_TURN_TIMEOUT_SECONDS": "0.5", "AGENTSTREAM_TURN_ISOLATION": isolation}).start()
    await asyncio.to_thread(processor.wait_ready)
    async with AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix)) as client:
        for agent_id in ("blocker", "bystander"):
            await client.schedule_agent("Blocking", agent_id)
        await client.send_agent_event("blocker", "block", BLOCK_S)
        await client.send_agent_event("bystander", "note")

        def parked() -> dict[str, Any] | None:
            seen = state(processor.url, "blocker")
            return seen if seen is not None and seen["status"] == "stuck" else None

        blocker = await poll(parked, timeout=60, interval=0.1, what="the blocking agent parked as stuck")
        assert "blocked the event loop" in (blocker["error"] or "")
        assert blocker["parked_inputs"] == 1 and blocker["fields"]["notes"] == 0  # input kept, turn not

        def noted() -> bool:
            seen = state(processor.url, "bystander")
            return seen is not None and seen["fields"]["notes"] == 1

        await poll(noted, timeout=60, interval=0.1, what="the other agent's note applied")
        await client.send_agent_event("bystander", "note")  # and the next one, after the block
        await poll(lambda: (state(processor.url, "bystander") or {}).get("fields", {}).get("notes") == 2,
                   timeout=60, interval=0.1, what="a later note applied")
    assert metric(processor.url, "agentstream_blocked_turns_total") == 1
