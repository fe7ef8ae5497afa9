"""`agentstream replay`: a running agent's stored record, fetched from its processor (or a file),
replayed through the code about to be deployed; exit 1 when that code would take another path."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentstream.agents import AgentClient
from agentstream.streams.settings import Settings

from support import APPS, Cluster

pytestmark = pytest.mark.integration

CHANGED_RECORDER = '''
from agentstream.agents import agent, condition, function


@function
async def audit(value: int) -> int:
    return value


@agent.defn()
class Recorder:
    """The test app's Recorder after an edit that must not be deployed: run starts with a step."""

    def __init__(self) -> None:
        self.notes: list[int] = []

    @agent.event
    async def note(self, note: dict) -> int:
        self.notes.append(note["n"])
        return len(self.notes)

    @agent.run
    async def run(self) -> None:
        await agent.step(function=audit, function_input=1)
        await condition(lambda: False)
'''


async def test_replay_passes_for_the_running_code_and_fails_for_an_incompatible_edit(
    cluster: Cluster, tmp_path: Path,
) -> None:
    processor = cluster.processor().start()
    await asyncio.to_thread(processor.wait_ready)
    async with AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix,
                                    api_url=processor.url)) as client:
        await client.schedule_agent("Recorder", "rec-1", wait=60)
        await client.send_agent_event("rec-1", "note", {"n": 1}, wait=60)
        record = await client.get_agent_record("rec-1")
    assert record["agent_id"] == "rec-1" and record["base"] and "journal" in record, record  # the whole record
    (tmp_path / "saved.json").write_text(json.dumps(record), encoding="utf-8")
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "recorder.py").write_text(CHANGED_RECORDER, encoding="utf-8")

    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    env.update(AGENTSTREAM_KAFKA_BOOTSTRAP=cluster.bootstrap, AGENTSTREAM_TOPIC_PREFIX=cluster.prefix,
               AGENTSTREAM_API_URL=processor.url)

    def replay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agentstream.streams.cli", "replay", *args], env=env,
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    same = await asyncio.to_thread(replay, "rec-1", "--app", "recorder", "--app-dir", str(APPS))
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.startswith("ok    rec-1 (Recorder, running,") and "replays as recorded" in same.stdout

    edited = await asyncio.to_thread(replay, "rec-1", "--app", "recorder", "--app-dir", str(changed))
    assert edited.returncode == 1, edited.stdout + edited.stderr
    assert "FAILS rec-1" in edited.stdout and "NondeterminismError" in edited.stdout, edited.stdout
    assert "1 of 1 agents would not replay" in edited.stderr and "Traceback" not in edited.stderr

    from_file = await asyncio.to_thread(replay, "--file", str(tmp_path / "saved.json"), "--app", "recorder",
                                        "--app-dir", str(changed))
    assert from_file.returncode == 1 and "FAILS rec-1" in from_file.stdout, from_file.stdout + from_file.stderr
