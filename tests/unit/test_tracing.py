"""Traces in-process (the SDK's in-memory exporter): a record's `traceparent` header makes the
turn that handles it a child of its producer's span, and the turn's outputs carry the turn on;
a record without one starts a trace. Header forms of aiokafka (pairs) and Faust (a mapping)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentstream.streams import tracing
from agentstream.streams.engine import DurableEngine, EngineConfig
from agentstream.streams.processor.handler import InputHandler
from agentstream.streams.processor.metrics import ProcessorMetrics
from agentstream.topics import ScheduleAgent

from test_handler import AGENT_TYPE, IDENTITY, NAMES, DictStore

@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Spans of this test only: the process's global provider stays the API's no-op one, so the
    other tests' publishers (which take no headers) never see a trace."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_provider", provider)
    yield exporter
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


class TracedPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[str, bytes]] | None]] = []

    async def publish(self, topic: str, key: bytes | None, value: bytes,
                      headers: list[tuple[str, bytes]] | None = None) -> None:
        self.sent.append((topic, headers))


def traceparent(headers: Any) -> str:
    return dict(headers)["traceparent"].decode()


def test_a_records_headers_make_its_handling_a_child_and_no_headers_start_a_trace(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.tracer().start_as_current_span("client") as client:
        sent = tracing.headers()
    assert traceparent(sent).split("-")[1] == format(client.get_span_context().trace_id, "032x")
    for form in (sent, dict(sent)):  # aiokafka's pairs, Faust's mapping
        with tracing.consumed("turn", form, {"k": 1}) as turn:
            assert turn.parent is not None and turn.parent.span_id == client.get_span_context().span_id
    with tracing.consumed("turn", None, {}) as fresh:
        assert fresh.parent is None
    assert [s.name for s in spans.get_finished_spans()] == ["client", "turn", "turn", "turn"]


async def test_the_handlers_turn_continues_the_records_trace_and_its_outputs_carry_the_turn(
    spans: InMemorySpanExporter,
) -> None:
    publisher = TracedPublisher()
    handler = InputHandler(names=NAMES, engine=DurableEngine(EngineConfig()), store=DictStore(), publisher=publisher,
                           metrics=ProcessorMetrics.create(CollectorRegistry()), identity=IDENTITY)
    with tracing.tracer().start_as_current_span("client schedule"):
        headers = tracing.headers()
    message = ScheduleAgent(agent_id="traced", agent_type=AGENT_TYPE)
    assert await handler.handle(NAMES.agent_events, 0, 7, message.key, message.to_bytes(), headers) == "applied"

    turn = next(s for s in spans.get_finished_spans() if s.name == "turn")
    assert turn.parent is not None and format(turn.parent.span_id, "016x") == traceparent(headers).split("-")[2]
    assert turn.attributes is not None and turn.attributes["agentstream.outcome"] == "applied"
    assert turn.attributes["agentstream.agent_id"] == "traced" and turn.attributes["messaging.kafka.message.offset"] == 7
    assert publisher.sent, "the schedule's turn published nothing"
    for topic, out in publisher.sent:  # every output names the turn as its parent
        assert out is not None and traceparent(out).split("-")[2] == format(turn.context.span_id, "016x"), topic
