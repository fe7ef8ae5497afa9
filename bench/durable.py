"""Durable invocations end to end: one processor and one worker on the embedded broker.

A 3-step invocation crosses Kafka seven times (schedule, then a step command and a
step result per step), so its latency is mostly per-hop broker latency; the steps/s
measurement shows how much work one processor turns over when many agents step at once.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer

from agentstream.topics import AgentStatus, AgentUpdate, ScheduleAgent

from harness import Bench, Row, agent_state, metric, percentile, wait_until

HOPS = 7  # schedule + 3 x (step command, step result)


class Completions:
    """Watches agent-updates for "completed": event-driven, so waiting adds no load on the processor.

    (Polling the processor's HTTP every few ms competes with the turns being measured
    for its event loop; `get_agent_result` polls with a backoff that adds up to half
    the wait.)
    """

    def __init__(self, bench: Bench, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bench.bootstrap, group_id=None, auto_offset_reset="latest",
            **bench.profile.consumer_options(),
        )

    async def __aenter__(self) -> "Completions":
        await self._consumer.start()
        await self._consumer.getmany(timeout_ms=500)  # joins the topic's end before the first schedule
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def wait(self, agent_id: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await self._consumer.getmany(timeout_ms=100)
            for record in (r for batch in batches.values() for r in batch):
                update = AgentUpdate.model_validate_json(record.value)
                if update.agent_id != agent_id:
                    continue
                if update.status is AgentStatus.COMPLETED:
                    return
                if update.status is not AgentStatus.RUNNING:
                    raise RuntimeError(f"{agent_id}: {update.status.value}")
        raise TimeoutError(f"{agent_id} did not complete within {timeout}s")


async def invocation_latency(bench: Bench) -> list[Row]:
    """Sequential schedule -> completed of a 3-step agent; percentiles over N runs."""
    runs, via_client = (15, 5) if bench.quick else (50, 15)
    space = await bench.slice("latency")
    processor, worker = space.processor(), space.worker()
    await bench.ready(processor, worker)
    samples: list[float] = []
    client_samples: list[float] = []
    async with space.client(processor.url) as client, Completions(bench, space.names.agent_updates) as completions:
        for i in range(-2, runs):  # two warm-up invocations, not counted
            started = time.perf_counter()
            await client.schedule_agent("BenchThreeSteps", f"lat-{i}", 0)
            await completions.wait(f"lat-{i}")
            if i >= 0:
                samples.append((time.perf_counter() - started) * 1000)
        for i in range(via_client):
            started = time.perf_counter()
            await client.schedule_agent("BenchThreeSteps", f"lat-client-{i}", 0)
            assert await client.get_agent_result(f"lat-client-{i}", timeout=60) == 3
            client_samples.append((time.perf_counter() - started) * 1000)
    p50 = percentile(samples, 50)
    how = f"{runs} sequential runs, schedule_agent -> 'completed' on agent-updates"
    return [
        Row("3-step invocation latency p50", f"{p50:.0f}", "ms", f"{how}; ~{p50 / HOPS:.0f} ms per Kafka hop ({HOPS} hops)"),
        Row("3-step invocation latency p95", f"{percentile(samples, 95):.0f}", "ms", how),
        Row("3-step invocation latency p99", f"{percentile(samples, 99):.0f}", "ms", f"{how}; nearest rank: the max"),
        Row("  same, until get_agent_result returns, p50", f"{percentile(client_samples, 50):.0f}", "ms",
            f"{via_client} runs; it polls at 0, 50, 150, 350 ms ..., so results land on those steps"),
    ]


async def steps_per_second(bench: Bench) -> list[Row]:
    """32 agents each looping K sequential steps, all scheduled at once."""
    agents, steps = 32, (10 if bench.quick else 25)
    space = await bench.slice("steps")
    processor, worker = space.processor(), space.worker()
    await bench.ready(processor, worker)
    ids = [f"loop-{i:02d}" for i in range(agents)]
    schedules = [ScheduleAgent(agent_id=a, agent_type="BenchStepLoop", input=steps) for a in ids]
    started = time.perf_counter()
    await space.produce((s.key, s.to_bytes()) for s in schedules)
    await wait_until(lambda: metric(processor.url, "agentstream_agent_status_changes_total", status="completed") >= agents, "all loops completed", interval=0.02)
    elapsed = time.perf_counter() - started
    results = {(agent_state(processor.url, a) or {}).get("result") for a in ids}
    check = "results exact" if results == {steps} else f"RESULTS WRONG: {sorted(map(str, results))}"
    total = agents * steps
    notes = f"{agents} agents x {steps} steps in {elapsed:.1f}s, 1 processor + 1 worker; {check}"
    return [Row("steps/s, 32 concurrent agents", f"{total / elapsed:,.0f}", "steps/s", notes)]
