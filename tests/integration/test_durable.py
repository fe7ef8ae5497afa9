"""The durable engine end to end on the embedded broker: processors, workers, timers, children."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from agentstream.agents import AgentClient, AgentFailedError
from agentstream.streams.settings import Settings
from agentstream.topics import AgentStatus

from support import Cluster, get_json, poll

pytestmark = pytest.mark.integration

APP = "shapes"


def client_for(cluster: Cluster, api_url: str) -> AgentClient:
    return AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=api_url))


async def start(cluster: Cluster, *, processors: int = 1) -> list[Any]:
    started = [cluster.processor(name=f"processor-{i}", app=APP).start() for i in range(processors)]
    worker = cluster.worker(app=APP).start()
    for process in [*started, worker]:
        await asyncio.to_thread(process.wait_ready)
    return started


def metric_samples(api_url: str, name: str) -> dict[str, float]:
    status, _ = get_json(f"{api_url}/health")
    assert status == 200
    import urllib.request

    text = urllib.request.urlopen(f"{api_url}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            labels, _, value = line.rpartition(" ")
            samples[labels] = float(value)
    return samples


async def test_two_hundred_flaky_tasks_each_complete_exactly_once_with_retries_in_metrics(cluster: Cluster) -> None:
    (processor,) = await start(cluster)
    tasks = [f"task-{i:03d}" for i in range(int(os.environ.get("FLAKY_TASKS", "200")))]
    async with client_for(cluster, processor.url) as client:
        await client.schedule_agent("FlakyTasks", "flaky")
        await client.send_agent_event("flaky", "configure", {"speed": "fast"})
        for task in tasks:
            await client.send_agent_event("flaky", "add_task", {"id": task})
        await client.send_agent_event("flaky", "end")
        t0 = time.monotonic()
        result = await client.get_agent_result("flaky", timeout=240)
        print(f"took {time.monotonic() - t0:.1f}s")
        state = await client.get_agent_state("flaky")
    assert result == {"completed": 200, "failed": 0}
    assert state["fields"]["done_ids"] == tasks  # each once, in order
    retries = metric_samples(processor.url, "agentstream_step_retries_total")
    completed = metric_samples(processor.url, "agentstream_steps_total")
    assert sum(retries.values()) > 20, retries  # 30% of 200 first attempts fail: ~86 retries expected
    assert completed['agentstream_steps_total{function="process_flaky",outcome="completed"}'] == 200
    print(f"200 tasks completed once each after {sum(retries.values()):.0f} retries")


async def test_children_on_other_partitions_and_processors_report_back(cluster: Cluster) -> None:
    first, second = await start(cluster, processors=2)
    names = ["ada", "bob", "cy", "dee", "eve", "fay"]
    async with client_for(cluster, first.url) as client:
        run_id = await client.schedule_agent("Fanout", "fan", names)
        updates = client.agent_updates("fan")
        result = await client.get_agent_result("fan", timeout=120)
        seen = []
        async for update in updates:
            seen.append((update.status, update.run_id))
            if update.status is AgentStatus.COMPLETED:
                break
        await updates.aclose()
        children = {name: await client.get_agent_state(f"fan-{name}") for name in names}
        waiter = await client.get_agent_state("fan-waiter")
    assert result == [f"hello {name}" for name in names]
    assert seen == [(AgentStatus.RUNNING, run_id), (AgentStatus.COMPLETED, run_id)]
    assert {c["status"] for c in children.values()} == {"completed"}
    assert {c["parent"]["agent_id"] for c in children.values()} == {"fan"}
    assert waiter["status"] == "running"  # child_start: the parent did not wait for it
    owners = {get_json(f"{p.url}/agents/fan-{n}")[0] for p in (first, second) for n in names}
    assert owners == {200}


async def test_cancelling_a_parent_with_cancel_children_cancels_the_children(cluster: Cluster) -> None:
    (processor,) = await start(cluster)
    kids = [f"family-kid{n}" for n in (1, 2, 3)]

    def kid_statuses() -> list[str | None]:
        return [(get_json(f"{processor.url}/agents/{kid}")[1] or {}).get("status") for kid in kids]

    async with client_for(cluster, processor.url) as client:
        await client.schedule_agent("Family", "family")
        await poll(lambda: kid_statuses() == ["running"] * 3, what="three children running")
        await client.cancel_agent("family", "shutting down", cancel_children=True)
        with pytest.raises(AgentFailedError) as failed:
            await client.get_agent_result("family", timeout=30)
        assert failed.value.status == "cancelled" and failed.value.error == "shutting down"
        await poll(lambda: kid_statuses() == ["cancelled"] * 3, what="children cancelled")
        child = await client.get_agent_state("family-kid3")
    assert child["error"] == "parent family was cancelled"


async def test_a_durable_timer_fires_after_a_processor_crash(cluster: Cluster) -> None:
    data_dir = cluster.tmp / "state"
    processor = cluster.processor(app=APP, data_dir=data_dir).start()
    await asyncio.to_thread(processor.wait_ready)
    async with client_for(cluster, processor.url) as client:
        started = time.monotonic()
        await client.schedule_agent("Sleeper", "nap", 4.0)
        await poll(lambda: (get_json(f"{processor.url}/agents/nap")[1] or {}).get("timers"), what="timer armed")
        processor.kill()
        restarted = cluster.processor(name="processor-restarted", app=APP, data_dir=data_dir).start()
        await asyncio.to_thread(restarted.wait_ready)
        client.settings = client.settings.model_copy(update={"api_url": restarted.url})
        result = await client.get_agent_result("nap", timeout=60)
    # never before its due time; later by as long as the restart took (the fire waits for a ready owner)
    assert result.startswith("slept ") and 4.0 <= float(result.removeprefix("slept ").removesuffix("s")) < 60
    assert time.monotonic() - started >= 4.0
    fired = metric_samples(restarted.url, "agentstream_timers_fired_total")
    assert sum(fired.values()) >= 1
