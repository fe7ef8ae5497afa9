"""What became of a client's input, asked of the processor that handled it
(`GET /agents/{id}/inputs/{input_id}`, outcomes.py): the client's `wait=` and `input_outcome`,
and the CLI's `send` / `schedule` / `cancel`, which wait for it by default and exit non-zero
when the input was rejected."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from agentstream.agents import AgentClient, InputRejectedError, TimeoutError
from agentstream.streams.settings import Settings

from support import Cluster

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "agentstream.streams.cli"]


def client_for(cluster: Cluster, api_url: str) -> AgentClient:
    return AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=api_url))


async def test_the_client_learns_each_outcome_and_a_rejection_raises_with_the_processors_reason(
    cluster: Cluster,
) -> None:
    processor = cluster.processor().start()
    await asyncio.to_thread(processor.wait_ready)
    async with client_for(cluster, processor.url) as client:
        run_id = await client.schedule_agent("Recorder", "r1", wait=60)
        assert (await client.input_outcome("r1", run_id, timeout=5)).outcome == "applied"
        with pytest.raises(InputRejectedError) as again:
            await client.schedule_agent("Recorder", "r1", wait=60)
        assert again.value.reason_code == "already_running" and "r1" in (again.value.reason or "")

        applied = await client.send_agent_event("r1", "note", {"n": 1}, wait=60)
        assert (await client.input_outcome("r1", applied, timeout=5)).outcome == "applied"
        with pytest.raises(InputRejectedError) as typo:
            await client.send_agent_event("r1", "nope", {"n": 2}, wait=60)
        assert typo.value.reason_code == "unknown_event" and "note" in (typo.value.reason or "")  # names the events
        with pytest.raises(InputRejectedError) as invalid:
            await client.send_agent_event("r1", "note", {"n": "two"}, wait=60)
        assert invalid.value.reason_code == "invalid_payload"
        with pytest.raises(InputRejectedError) as nobody:
            await client.send_agent_event("nobody", "note", {"n": 3}, wait=60)
        assert nobody.value.reason_code == "agent_not_found"

        first = await client.send_agent_event("r1", "note", {"n": 4}, idempotency_key="k4", wait=60)
        repeated = await client.send_agent_event("r1", "note", {"n": 4}, idempotency_key="k4-again", wait=60)
        assert first != repeated
        same_key = await client.send_agent_event("r1", "note", {"n": 4}, idempotency_key="k4")
        assert (await client.input_outcome("r1", same_key, timeout=60)).outcome == "duplicate"
        assert (await client.get_agent_state("r1"))["fields"]["notes"] == [1, 4, 4]  # the rejected ones left no trace

        with pytest.raises(TimeoutError):
            await client.input_outcome("r1", "no-such-input", timeout=1)

    # A restarted processor no longer remembers: the agent's record says what it applied.
    processor.kill()
    restarted = cluster.processor().start()
    await asyncio.to_thread(restarted.wait_ready)
    async with client_for(cluster, restarted.url) as client:
        assert (await client.input_outcome("r1", applied, timeout=30)).outcome == "applied"
        assert (await client.input_outcome("r1", run_id, timeout=30)).outcome == "applied"
        await client.cancel_agent("r1", wait=60)
        assert (await client.get_agent_state("r1"))["status"] == "cancelled"


def run_cli(cluster: Cluster, api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    env.update(AGENTSTREAM_KAFKA_BOOTSTRAP=cluster.bootstrap, AGENTSTREAM_TOPIC_PREFIX=cluster.prefix,
               AGENTSTREAM_API_URL=api_url)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


async def test_the_cli_reports_each_outcome_and_exits_non_zero_with_the_reason_when_rejected(
    cluster: Cluster,
) -> None:
    processor = cluster.processor().start()
    await asyncio.to_thread(processor.wait_ready)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(cluster, processor.url, *args)

    scheduled = await asyncio.to_thread(cli, "schedule", "Recorder", "--id", "c1")
    assert scheduled.returncode == 0, scheduled.stderr
    assert json.loads(scheduled.stdout) | {"run_id": "-"} == {"agent_id": "c1", "run_id": "-", "outcome": "applied"}

    twice = await asyncio.to_thread(cli, "schedule", "Recorder", "--id", "c1")
    assert twice.returncode == 1, twice.stdout + twice.stderr
    assert json.loads(twice.stdout)["reason_code"] == "already_running"
    assert "rejected (already_running)" in twice.stderr and "Traceback" not in twice.stderr

    sent = await asyncio.to_thread(cli, "send", "c1", "note", '{"n": 1}')
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["outcome"] == "applied"

    typo = await asyncio.to_thread(cli, "send", "c1", "nots", '{"n": 2}')
    assert typo.returncode == 1, typo.stdout + typo.stderr
    assert "unknown_event" in typo.stderr and "note" in typo.stderr and "Traceback" not in typo.stderr

    unsent = await asyncio.to_thread(cli, "send", "c1", "nots", '{"n": 3}', "--no-wait")
    assert unsent.returncode == 0 and "outcome" not in json.loads(unsent.stdout)  # --no-wait: sent, not checked

    cancelled = await asyncio.to_thread(cli, "cancel", "c1")
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["outcome"] == "applied", cancelled.stderr
    gone = await asyncio.to_thread(cli, "send", "c1", "note", '{"n": 4}')
    assert gone.returncode == 1 and "agent_not_running" in gone.stderr, gone.stdout + gone.stderr

    # Every rejection above is on dead-letters, with its reason: `agentstream dead-letters` reads them back.
    letters = await asyncio.to_thread(cli, "dead-letters", "--agent", "c1", "--json")
    assert letters.returncode == 0, letters.stderr
    read = [json.loads(line) for line in letters.stdout.splitlines()]
    assert [r["reason_code"] for r in read] == ["already_running", "unknown_event", "unknown_event",
                                                "agent_not_running"]
    assert all(r["key"] == "c1" for r in read) and '"nots"' in read[1]["value"]
    readable = await asyncio.to_thread(cli, "dead-letters", "--agent", "c1", "--reason", "unknown_event")
    assert readable.returncode == 0 and "2 dead letters" in readable.stderr, readable.stderr
    assert readable.stdout.count("unknown_event: agent type Recorder has no event 'nots'") == 2, readable.stdout
