"""A real worker's /metrics after real model calls: the LLM metrics are observed where the step runs.

The unit tests (tests/unit/test_llm_metrics.py) check what one attempt adds; this checks
that the worker observes every attempt of `agentstream.llm.call` it runs, a retried
429 included, and serves the result on its /metrics.
"""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentstream.agents import AgentClient
from agentstream.agents.testing import Reply, ScriptedLLM
from agentstream.streams.settings import Settings
from support import Cluster

pytestmark = pytest.mark.integration

APP = "approvalapp"
MODEL = "scripted-model"  # the Model.name of tests/apps/approvalapp.py


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("agentstream_llm_")
    }


async def test_the_worker_serves_llm_metrics_for_each_model_call_attempt_it_ran(cluster: Cluster) -> None:
    with ScriptedLLM([Reply.rate_limited(retry_after=0), Reply.text("Hello.").with_usage(30, 4, cached=10)]) as llm:
        processor = cluster.processor(app=APP).start()
        worker = cluster.worker(app=APP, env={"AGENTSTREAM_LLM_BASE_URL": llm.base_url,
                                              "APPROVALAPP_LOG": str(cluster.tmp / "refunds.jsonl")}).start()
        await asyncio.gather(asyncio.to_thread(processor.wait_ready), asyncio.to_thread(worker.wait_ready))
        async with AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix,
                                        api_url=processor.url)) as client:
            await client.schedule_agent("ApprovalApp.Desk", "desk-metrics", "Say hello.")
            result = await client.get_agent_result("desk-metrics", timeout=60)
        assert result["text"] == "Hello."
        assert len(llm.requests) == 2

    seen = samples(worker.url)
    model = (("model", MODEL),)
    assert seen[("agentstream_llm_calls_total", (*model, ("outcome", "retryable_error")))] == 1
    assert seen[("agentstream_llm_calls_total", (*model, ("outcome", "ok")))] == 1
    for kind, tokens in (("cached", 10), ("completion", 4), ("prompt", 30)):
        assert seen[("agentstream_llm_tokens_total", (("kind", kind), *model))] == tokens
    assert seen[("agentstream_llm_call_duration_seconds_count", model)] == 1
    assert seen[("agentstream_llm_time_to_first_token_seconds_count", model)] == 1
