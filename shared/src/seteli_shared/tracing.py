"""Traces with OpenTelemetry, off unless configured: ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (the standard variable;
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS`` and the other OTLP variables are read by the
exporter as usual) exports each service's spans over OTLP/HTTP.

One charge is one trace across services:

- each HTTP request is a server span (``opentelemetry-instrumentation-fastapi``);
- an event written to the outbox while a span is current keeps that span's W3C ``traceparent`` in its outbox row
  (``outbox._row``; the bulk paths write it too), and the relay publishes it as the message's ``traceparent``
  header (the CloudEvents distributed tracing extension, carried as an AMQP header);
- a consumer starts a span per message as the child of its ``traceparent``; the events a handler writes carry
  that span's context on.

When tracing is off nothing is instrumented, no span is made and ``current_traceparent`` returns None at the
cost of one global read: the outbox rows' ``traceparent`` stays NULL and no header is sent.

Each service has its own ``TracerProvider`` (its ``service.name``), not the process-wide one, so that several
services in one process (the tests) keep their names apart. Never put personal data in a span attribute: the
spans carry routes (templates, not paths with ids), message types, queue names and message ids only.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .logging import get_logger

log = get_logger(__name__)

HEADER = "traceparent"
#: the header of a message's other traces (space-separated traceparents), linked from its consumer span
LINKS_HEADER = "tracelinks"
#: at most this many links a message (55 bytes each in the header: ~7 kB)
MAX_LINKS = 128
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_PROPAGATOR = TraceContextTextMapPropagator()
#: whether any service of this process traces (``current_traceparent`` returns None at once otherwise)
_on = False
#: an exporter every service of this process also sends its spans to (tests: an ``InMemorySpanExporter``)
_test_exporter: SpanExporter | None = None
_providers: list[TracerProvider] = []


def use_exporter(exporter: SpanExporter | None) -> None:
    """Have the services started from now on in this process send their spans (synchronously) to
    ``exporter`` too, whether OTLP is configured or not; None stops that for services started later."""
    global _test_exporter
    _test_exporter = exporter


def provider_for(service_name: str) -> TracerProvider | None:
    """The service's tracer provider, or None when tracing is off (no OTLP endpoint, no test exporter)."""
    global _on
    processors: list[SpanProcessor] = []
    if any(os.environ.get(v) for v in ENDPOINT_VARIABLES):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processors.append(BatchSpanProcessor(OTLPSpanExporter()))
    if _test_exporter is not None:
        processors.append(SimpleSpanProcessor(_test_exporter))
    if not processors:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": f"seteli-{service_name}"}))
    for p in processors:
        provider.add_span_processor(p)
    _providers.append(provider)
    _on = True
    log.info("tracing.on", otlp=len(processors) > (1 if _test_exporter is not None else 0))
    return provider


def instrument(app: Any, provider: TracerProvider | None) -> None:
    """A server span per HTTP request of ``app`` (nothing when tracing is off). The health probes are left out."""
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls="/health/live,/health/ready")


def shutdown(provider: TracerProvider | None) -> None:
    """Export what is left and stop (at the service's stop)."""
    if provider is None:
        return
    global _on
    provider.shutdown()
    if provider in _providers:
        _providers.remove(provider)
    _on = bool(_providers)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None (tracing off, or no span)."""
    if not _on:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def consumer_span(tracer: Tracer, headers: Mapping[str, Any] | None, name: str, attributes: dict[str, Any]):
    """A started consumer span, the child of the message's ``traceparent`` header (a new trace without one);
    the caller ends it."""
    carrier = {}
    value = (headers or {}).get(HEADER)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", "replace")
    if isinstance(value, str):
        carrier[HEADER] = value
    parent = _PROPAGATOR.extract(carrier)
    return tracer.start_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes,
                             links=links((headers or {}).get(LINKS_HEADER)))


def links(value: Any) -> list[Link]:
    """The span links of a ``tracelinks`` header: the traces of the other writes a message stands for (a coalesced
    message carries its first row's trace as its parent and the others' as links); malformed parts are skipped."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", "replace")
    if not isinstance(value, str) or not value:
        return []
    out = []
    for part in value.split()[:MAX_LINKS]:
        context = trace.get_current_span(_PROPAGATOR.extract({HEADER: part})).get_span_context()
        if context.is_valid:
            out.append(Link(context))
    return out
