"""Events/s: agentstream's processor vs a bare Faust app, on the same records and broker.

Both consumers are started and ready before the clock starts; the clock runs from the
first produce until the consumer reports every record applied, so the producer's own
speed is part of both numbers (its time alone is given in the notes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentstream.streams.broker.embedded import free_port
from agentstream.streams.devstack import ManagedProcess
from agentstream.topics import ScheduleAgent, SendEvent

from harness import BENCH_DIR, PARTITIONS, Bench, Row, agent_state, fetch, metric, wait_until

TURNS = "agentstream_turns_total"


@dataclass
class Load:
    agents: int
    events_each: int

    @property
    def total(self) -> int:
        return self.agents * self.events_each

    def agent_ids(self) -> list[str]:
        return [f"counter-{i:03d}" for i in range(self.agents)]

    def events(self) -> list[tuple[bytes, bytes]]:
        """Pre-serialised, round-robin over agents so every partition is busy from the start."""
        return [
            (e.key, e.to_bytes())
            for _ in range(self.events_each)
            for e in (SendEvent(agent_id=a, event="add", payload=1) for a in self.agent_ids())
        ]

    def describe(self) -> str:
        return f"{self.agents} agents x {self.events_each} events"


def load_for(bench: Bench) -> Load:
    return Load(100, 20 if bench.quick else 50)


async def agentstream_events(bench: Bench) -> list[Row]:
    """One processor applying the load: each event is one engine turn on one agent."""
    load = load_for(bench)
    space = await bench.slice("events")
    processor = space.processor()
    await bench.ready(processor)
    schedules = [ScheduleAgent(agent_id=a, agent_type="BenchCounter") for a in load.agent_ids()]
    await space.produce((s.key, s.to_bytes()) for s in schedules)
    await wait_until(lambda: metric(processor.url, TURNS, kind="schedule") >= load.agents, "agents scheduled")
    records = load.events()
    started = time.perf_counter()
    produce_s = await space.produce(records)
    await wait_until(lambda: metric(processor.url, TURNS, kind="event") >= load.total, "events applied", interval=0.02)
    elapsed = time.perf_counter() - started
    turn_ms = mean_turn_ms(processor.url)

    def counts() -> set[Any]:
        return {(agent_state(processor.url, a) or {}).get("fields", {}).get("count") for a in load.agent_ids()}

    # The state API shows a turn once its writes are acknowledged, a moment after the turn is counted.
    try:
        await wait_until(lambda: counts() == {load.events_each}, "every counter shown", timeout=10)
        check = "counters exact"
    except TimeoutError:
        check = f"COUNTERS WRONG: {sorted(map(str, counts()))}"
    rate = bench.rates["events"] = load.total / elapsed
    notes = (f"{load.describe()}, 1 processor, {PARTITIONS} partitions; mean handle() {turn_ms:.2f} ms/input; "
             f"producer alone {produce_s:.1f}s; {check}")
    return [Row("events/s, agentstream", f"{rate:,.0f}", "events/s", notes)]


def mean_turn_ms(url: str) -> float:
    """The processor's mean time to handle one input (decode, engine turn, store, publish)."""
    count = metric(url, "agentstream_turn_duration_seconds_count")
    return 1000 * metric(url, "agentstream_turn_duration_seconds_sum") / count if count else 0.0


class ScriptProcess(ManagedProcess):
    """A ManagedProcess running a script of bench/ instead of the agentstream CLI."""

    def __init__(self, name: str, script: str, *, env: dict[str, str], http_port: int, log_dir: Path) -> None:
        super().__init__(name, ["worker"], env=env, http_port=http_port, log_path=log_dir / f"{name}.log")
        self.script = str(BENCH_DIR / script)

    def start(self) -> "ScriptProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, self.script, *self.args], env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self


async def faust_events(bench: Bench) -> list[Row]:
    """The bare Faust app on the same load: the floor agentstream builds on."""
    load = load_for(bench)
    space = await bench.slice("faust")
    port = free_port()
    env = {
        **os.environ,
        "BENCH_BOOTSTRAP": bench.bootstrap,
        "BENCH_TOPIC": space.names.agent_events,
        "BENCH_PARTITIONS": str(PARTITIONS),
        "BENCH_EMBEDDED": "1" if bench.profile.embedded else "0",
        "BENCH_APP_ID": space.app_id,
        "BENCH_DATA_DIR": str(bench.workdir / f"{space.prefix}faust-state"),
        "BENCH_HTTP_PORT": str(port),
    }
    process = ScriptProcess(f"{space.prefix}faust", "faust_bare.py", env=env, http_port=port, log_dir=bench.workdir)
    bench.track(process)
    process.start()
    await bench.ready(process)
    records = load.events()
    started = time.perf_counter()
    produce_s = await space.produce(records)
    await wait_until(lambda: applied(process.url) >= load.total, "faust records applied", interval=0.02)
    rate = bench.rates["faust"] = load.total / (time.perf_counter() - started)
    notes = f"same records; Faust Table (rocksdb, raw serializers), table[key] += 1; producer alone {produce_s:.1f}s"
    return [Row("events/s, bare Faust", f"{rate:,.0f}", "events/s", notes)]


def applied(url: str) -> int:
    """Records the bare Faust app has counted so far (0 while it does not answer)."""
    status, body = fetch(f"{url}/count")
    return int(json.loads(body)["applied"]) if status == 200 else 0
