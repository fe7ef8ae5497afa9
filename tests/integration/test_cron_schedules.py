"""`agentstream schedule --cron` on a real processor, across a SIGKILL of the processor: every slot
starts one run named after it or is counted missed (never two runs for one slot), and the
schedule goes on after the restart from its durable timer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from support import Cluster, get_json, poll

pytestmark = pytest.mark.integration

EVERY_2S = "* * * * * */2"  # croniter: a sixth field is seconds


def runs(url: str) -> list[str]:
    status, body = get_json(f"{url}/agents?prefix=tick%40&limit=1000")
    return [a["agent_id"] for a in body["agents"]] if status == 200 else []


async def test_a_cron_schedule_starts_each_slot_once_across_a_processor_kill(cluster: Cluster) -> None:
    state = cluster.tmp / "processor-state"
    processor = cluster.processor(data_dir=state).start()
    await asyncio.to_thread(processor.wait_ready)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    env.update(AGENTSTREAM_KAFKA_BOOTSTRAP=cluster.bootstrap, AGENTSTREAM_TOPIC_PREFIX=cluster.prefix,
               AGENTSTREAM_API_URL=processor.url)
    scheduled = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "agentstream.streams.cli", "schedule", "Recorder", "--cron", EVERY_2S,
                         "--id", "tick"], env=env, capture_output=True, text=True, timeout=120)
    assert scheduled.returncode == 0, scheduled.stdout + scheduled.stderr
    shown = json.loads(scheduled.stdout)
    assert shown["agent_id"] == "tick" and shown["outcome"] == "applied" and "Recorder on" in shown["schedule"]

    before = await poll(lambda: r if len(r := runs(processor.url)) >= 2 else None, timeout=60,
                        what="two runs of the schedule")
    processor.kill()  # SIGKILL; its state volume stays
    restarted = cluster.processor(data_dir=state).start()
    await asyncio.to_thread(restarted.wait_ready, 90)
    after = await poll(lambda: r if len(r := runs(restarted.url)) >= len(before) + 2 else None, timeout=90,
                       what="two more runs after the restart")

    slots = [datetime.strptime(run.split("@")[1], "%Y%m%dT%H%M%SZ") for run in after]
    assert len(set(after)) == len(after) and slots == sorted(slots)
    assert all((b - a) % timedelta(seconds=2) == timedelta(0) for a, b in zip(slots, slots[1:]))
    _, schedule = get_json(f"{restarted.url}/agents/tick")
    fields = schedule["fields"]
    # Each 2-second slot from the first run to the latest was started once (distinct IDs above) or,
    # while the processor was down, counted missed: the gaps are at most the missed count.
    spanned = int((slots[-1] - slots[0]) / timedelta(seconds=2)) + 1
    assert spanned - len(after) <= fields["missed"], (spanned, after, fields)
    assert fields["started"] >= len(after) and set(before) <= set(after)
    assert schedule["status"] == "running" and fields["agent_type"] == "Recorder"
