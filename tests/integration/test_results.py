"""`GET /agents/{id}/result?wait=S`: the owner holds the request until the agent ends, so a result
arrives when it exists instead of at the next poll; `get_agent_result` uses it."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from agentstream.agents import AgentClient, AgentFailedError
from agentstream.streams.settings import Settings

from support import Cluster, get_json, poll

pytestmark = pytest.mark.integration

HELD_S = 20.0


async def get(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=HELD_S + 10)) as r:
        return r.status, await r.json()


async def test_a_held_result_request_answers_when_the_agent_ends_and_the_client_gets_it(cluster: Cluster) -> None:
    processor = cluster.processor().start()
    await asyncio.to_thread(processor.wait_ready)
    settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=processor.url)
    async with AgentClient(settings) as client:
        await client.schedule_agent("Recorder", "held")
        await poll(lambda: get_json(f"{processor.url}/agents/held")[0] == 200, 60, what="the agent scheduled")

        status, body = await get(f"{processor.url}/agents/held/result")
        assert (status, body["status"]) == (202, "running")  # no wait asked: the status at once

        started = time.monotonic()
        held = asyncio.ensure_future(get(f"{processor.url}/agents/held/result?wait={HELD_S}"))
        waiting = asyncio.ensure_future(client.get_agent_result("held", timeout=HELD_S))
        await client.cancel_agent("held")
        status, body = await held
        assert (status, body["status"]) == (200, "cancelled"), body
        assert time.monotonic() - started < HELD_S  # answered when the agent ended, not when the wait ran out
        with pytest.raises(AgentFailedError) as failed:
            await waiting
        assert failed.value.status == "cancelled"

        # Asked before the schedule is applied: held until the agent ends, no 404 in between.
        early = asyncio.ensure_future(get(f"{processor.url}/agents/early/result?wait={HELD_S}"))
        await client.schedule_agent("Recorder", "early")
        await poll(lambda: get_json(f"{processor.url}/agents/early")[0] == 200, 60, what="the early agent scheduled")
        assert not early.done()
        await client.cancel_agent("early")
        status, body = await early
        assert (status, body["status"]) == (200, "cancelled"), body

    started = time.monotonic()
    assert (await get(f"{processor.url}/agents/nobody/result?wait=1"))[0] == 404
    assert time.monotonic() - started >= 1  # an agent not found yet is waited for too
    assert (await get(f"{processor.url}/agents/held/result?wait=soon"))[0] == 400
    assert (await get(f"{processor.url}/agents/held/result?wait=nan"))[0] == 400
