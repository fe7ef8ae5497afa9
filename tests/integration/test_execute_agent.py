"""`AgentClient.execute_agent`: schedule an agent and wait for its result, tied to the run it starts."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentstream.agents import AgentClient, InputRejectedError
from agentstream.streams.settings import Settings

from support import Cluster

pytestmark = pytest.mark.integration


async def test_execute_agent_returns_this_runs_result_and_raises_a_rejected_schedule_at_once(cluster: Cluster) -> None:
    processor = cluster.processor(app="localcrash").start()  # no worker: Doubler's step is local
    await asyncio.to_thread(processor.wait_ready)
    settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=processor.url)
    async with AgentClient(settings) as client:
        assert await client.execute_agent("Doubler", "d-1", 21, timeout=60) == 42
        # The same ID again: a new run, whose result is not the earlier run's 42.
        assert await client.execute_agent("Doubler", "d-1", 5, timeout=60) == 10

        await client.schedule_agent("LocalCrash", "busy", wait=60)  # long-lived
        started = time.monotonic()
        with pytest.raises(InputRejectedError) as rejected:
            await client.execute_agent("Doubler", "busy", 1, timeout=60)
        assert rejected.value.reason_code == "already_running"
        assert time.monotonic() - started < 30  # from the schedule's outcome, not the timeout

        with pytest.raises(InputRejectedError) as unknown:
            await client.execute_agent("NoSuchType", "x-1", timeout=60)
        assert unknown.value.reason_code == "unknown_agent_type"
