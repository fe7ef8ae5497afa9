"""`agentstream watch` follows an agent's updates and live output until it ends; `agentstream result`
prints its result, and exits 1 when it failed or was cancelled, 3 when it did not end in time."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from agentstream.agents import AgentClient
from agentstream.agents.testing import Reply, ScriptedLLM
from agentstream.streams.settings import Settings

from support import Cluster

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "agentstream.streams.cli"]


async def test_watch_shows_the_streamed_answer_and_the_end_and_result_reports_each_ending(cluster: Cluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    with ScriptedLLM([Reply.text("Hello from the desk.")]) as llm:
        processor = cluster.processor(app="approvalapp").start()
        worker = cluster.worker(app="approvalapp", env={"AGENTSTREAM_LLM_BASE_URL": llm.base_url,
                                                        "APPROVALAPP_LOG": str(cluster.tmp / "refunds.jsonl")}).start()
        await asyncio.gather(asyncio.to_thread(processor.wait_ready), asyncio.to_thread(worker.wait_ready))
        env.update(AGENTSTREAM_KAFKA_BOOTSTRAP=cluster.bootstrap, AGENTSTREAM_TOPIC_PREFIX=cluster.prefix,
                   AGENTSTREAM_API_URL=processor.url)

        def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)

        watching = asyncio.ensure_future(asyncio.to_thread(cli, "watch", "desk-1"))  # before the agent exists
        settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=processor.url)
        async with AgentClient(settings) as client:
            await client.schedule_agent("ApprovalApp.Desk", "desk-1", "Say hello.", wait=60)
            watched = await watching
            assert watched.returncode == 0, watched.stdout + watched.stderr
            assert "Hello from the desk." in watched.stdout, watched.stdout  # the streamed text
            assert "status running -> completed" in watched.stdout, watched.stdout

            done = await asyncio.to_thread(cli, "result", "desk-1")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["result"]["text"] == "Hello from the desk."

            as_json = await asyncio.to_thread(cli, "watch", "desk-1", "--json")  # ended already: the history, then exit
            assert as_json.returncode == 0, as_json.stderr
            sources = [json.loads(line)["source"] for line in as_json.stdout.splitlines()]
            assert "update" in sources and "stream" in sources

            await client.schedule_agent("ApprovalApp.Desk", "desk-2", "Say hello.", wait=60)
            await client.cancel_agent("desk-2", wait=60)
            cancelled = await asyncio.to_thread(cli, "result", "desk-2")
            assert cancelled.returncode == 1, cancelled.stdout + cancelled.stderr
            assert json.loads(cancelled.stdout)["status"] == "cancelled" and "cancelled" in cancelled.stderr

        waiting = await asyncio.to_thread(cli, "result", "nobody", "--timeout", "1")
        assert waiting.returncode == 3, waiting.stdout + waiting.stderr
        assert "did not end within 1.0s" in waiting.stderr and "Traceback" not in waiting.stderr
