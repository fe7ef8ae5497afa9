"""OpenTelemetry traces: a span per turn (processor), per step attempt (worker), per model call and
per tool call, joined into one trace across processes through the records' Kafka headers.

A turn's outputs (step commands, child schedules, updates) carry the turn's span as a W3C
`traceparent` header; the worker continues it in the attempt's span, whose result record
carries that span on, so the turn applying the result is its child: one agent's work reads
as one trace across the processor and the workers, whatever the hops. A record without the
header (produced by a client) starts a new trace.

Off unless configured: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) set, the
processor and the worker export their spans over OTLP/HTTP (the `otel` extra installs the
SDK and exporter); otherwise the API's no-op tracer costs next to nothing. The standard
`OTEL_*` variables (service name, sampler, batch delays) apply as the SDK defines them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .exceptions import ConfigurationError

log = logging.getLogger("agentstream.tracing")

Headers = list[tuple[str, bytes]]
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_propagator = TraceContextTextMapPropagator()


RecordHeaders = Sequence[tuple[str, bytes]] | Mapping[str, bytes]


def _pairs(carrier: RecordHeaders | None) -> list[tuple[str, bytes]]:
    """A record's headers as pairs (aiokafka gives pairs; Faust may give a mapping)."""
    if not carrier:
        return []
    return list(carrier.items()) if isinstance(carrier, Mapping) else list(carrier)


class _HeaderGetter(Getter[RecordHeaders]):
    def get(self, carrier: RecordHeaders, key: str) -> list[str] | None:
        found = [value.decode("latin-1") for name, value in _pairs(carrier) if name == key and value is not None]
        return found or None

    def keys(self, carrier: RecordHeaders) -> list[str]:
        return [name for name, _ in _pairs(carrier)]


class _HeaderSetter(Setter[Headers]):
    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier.append((key, value.encode("latin-1")))


_getter, _setter = _HeaderGetter(), _HeaderSetter()


def configure(service: str) -> bool:
    """Export spans over OTLP when an endpoint is configured; True if it is. Call once per process."""
    if not any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigurationError(
            f"{' or '.join(ENDPOINT_VARIABLES)} is set, but the OpenTelemetry SDK is not installed: "
            "pip install 'agentstream[otel]'"
        ) from exc
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    global _exporting
    _exporting = True
    log.info("exporting traces over OTLP", extra={"service": service})
    return True


def shutdown() -> None:
    """Flush and stop the exporter (spans still buffered are sent)."""
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


_provider: trace.TracerProvider | None = None  # tests set their own; else the process's global one
_exporting = False  # `configure` set up the SDK


def tracer() -> trace.Tracer:
    return (_provider or trace.get_tracer_provider()).get_tracer("agentstream")


def headers() -> Headers:
    """The current span as Kafka headers (`traceparent`, `tracestate`); empty when nothing is traced."""
    carrier: Headers = []
    _propagator.inject(carrier, setter=_setter)
    return carrier


@contextlib.contextmanager
def consumed(name: str, record_headers: RecordHeaders | None, attributes: Mapping[str, Any]) -> Iterator[Span]:
    """A span for handling one record, the child of the span its producer put in its headers.

    Every input of a processor passes here: with nothing exported and nothing to pass on (no
    header), it costs nothing but the call."""
    if not record_headers and not _exporting and _provider is None:
        yield trace.INVALID_SPAN
        return
    parent = _propagator.extract(_pairs(record_headers), getter=_getter)
    token = otel_context.attach(parent)
    try:
        with tracer().start_as_current_span(name, kind=SpanKind.CONSUMER, attributes=dict(attributes)) as span:
            yield span
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A span inside the current one (a model call in its step, a tool call)."""
    with tracer().start_as_current_span(name, kind=SpanKind.INTERNAL, attributes=dict(attributes or {})) as inner:
        yield inner
