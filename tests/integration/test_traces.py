"""OpenTelemetry traces over a real OTLP/HTTP endpoint (a receiver in the test decoding the
protobuf the SDK's exporter sends): a processor and a worker run an LLM agent that calls a
tool, and its whole run is one trace: turn spans on the processor, step-attempt spans on
the worker as children of the turn that issued them, `llm.call` and `tool` spans inside
their attempts, and the turn that applies a result as the child of the attempt."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from agentstream.agents import AgentClient
from agentstream.agents.testing import Reply, ScriptedLLM, ToolCall
from agentstream.streams.broker.embedded import free_port
from agentstream.streams.settings import Settings
from support import Cluster, poll

pytestmark = pytest.mark.integration

AGENT = "traced-1"


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


class Receiver:
    """An OTLP/HTTP traces endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> Receiver:
        async def traces(request: web.Request) -> web.Response:
            export = ExportTraceServiceRequest.FromString(await request.read())
            for resource in export.resource_spans:
                service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
                for scope in resource.scope_spans:
                    for s in scope.spans:
                        attributes = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in s.attributes}
                        self.spans.append(Span(service, s.name, s.trace_id.hex(), s.span_id.hex(),
                                               s.parent_span_id.hex(), attributes))
            return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                                content_type="application/x-protobuf")

        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def test_one_agent_run_is_one_trace_across_the_processor_and_the_worker(cluster: Cluster) -> None:
    replies = [Reply.tools(ToolCall("lookup", {"city": "Oslo"}, id="call_w")).with_usage(10, 5),
               Reply.text("Sunny in Oslo.").with_usage(12, 4)]
    async with Receiver() as receiver:
        with ScriptedLLM(replies) as llm:
            otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
            processor = cluster.processor(app="llmapp", env=otel).start()
            worker = cluster.worker(app="llmapp", env={**otel, "AGENTSTREAM_LLM_BASE_URL": llm.base_url,
                                                       "LLMAPP_LOG": str(cluster.tmp / "llmapp.jsonl")}).start()
            await asyncio.gather(asyncio.to_thread(processor.wait_ready), asyncio.to_thread(worker.wait_ready))
            async with AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix,
                                            api_url=processor.url)) as client:
                await client.schedule_agent("LLMApp.Budgeted", AGENT, input="Weather in Oslo?")
                assert (await client.get_agent_result(AGENT, timeout=60))["text"] == "Sunny in Oslo."

            def complete() -> list[Span] | None:
                names = Counter(s.name for s in receiver.spans)
                wanted = {"step agentstream.llm.call": 2, "step tool.lookup": 1, "llm.call scripted-model": 2,
                          "tool lookup": 1}
                return receiver.spans if all(names[n] >= k for n, k in wanted.items()) and names["turn"] >= 4 else None

            spans = await poll(complete, timeout=60, what="the spans of both components exported")

    mine = [s for s in spans if s.attributes.get("agentstream.agent_id") == AGENT
            or s.name.startswith(("llm.call", "tool "))]
    by_id = {s.span_id: s for s in spans}
    assert len({s.trace_id for s in mine}) == 1, [(s.service, s.name, s.trace_id[:8], s.parent_id[:8], s.attributes)
                                                  for s in mine]  # one trace

    turns = [s for s in mine if s.name == "turn"]
    steps = [s for s in mine if s.name.startswith("step ")]
    assert {s.service for s in turns} == {"agentstream-processor"} and {s.service for s in steps} == {"agentstream-worker"}
    for step in steps:  # issued by a turn of the processor
        assert by_id[step.parent_id].name == "turn", step
    applied = [t for t in turns if t.parent_id in {s.span_id for s in steps}]
    assert len(applied) >= 3, turns  # each result's turn continues its attempt's span
    for inner, outer in (("llm.call scripted-model", "step agentstream.llm.call"), ("tool lookup", "step tool.lookup")):
        for s in (s for s in mine if s.name == inner):
            assert by_id[s.parent_id].name == outer, s
    [root] = [t for t in turns if not t.parent_id]  # the schedule: a client's record starts the trace
    assert root.attributes["agentstream.outcome"] == "applied"
    call = next(s for s in mine if s.name == "llm.call scripted-model")
    assert call.attributes["gen_ai.request.model"] == "scripted-model" and call.attributes["gen_ai.usage.input_tokens"] in (10, 12)
