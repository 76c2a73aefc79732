"""One charge is one trace across services (``seteli_shared.tracing``): the provider's request to payments is a
server span, the ChargeAccepted event it writes keeps that span's ``traceparent`` in its outbox row, the relay sends
it as the message's header, and reporting's consumer span for that event is its child, in the same trace. Spans go
to an in-memory exporter; payments and reporting run in this process on the real PostgreSQL and RabbitMQ."""
from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select

import reporting.app
from payments.models import Charge
from reporting.settings import ReportingSettings
from seteli_shared import tracing
from seteli_shared.messaging import OutboxMessage
from seteli_shared.testing import eventually


@pytest.fixture
def spans():  # noqa: ANN201
    exporter = InMemorySpanExporter()
    tracing.use_exporter(exporter)
    yield exporter
    tracing.use_exporter(None)


@pytest.fixture
def live_settings(request) -> dict:  # noqa: ANN001
    """A test that asks for ``spans`` has tracing on before the payments app is made."""
    if "spans" in request.fixturenames:
        request.getfixturevalue("spans")
    return {}


async def test_a_charge_is_one_trace_from_payments_request_through_the_bus_into_reporting(live, spans, pg,
                                                                                          namespace, amqp_url):
    async with AsyncExitStack() as stack:
        app = reporting.app.create_app(ReportingSettings(
            environment="test", amqp_url=amqp_url, bus_namespace=namespace, relay_idle_seconds=0.05,
            database_url=await pg.create("reporting")))
        await stack.enter_async_context(app.router.lifespan_context(app))
        voucher_id = await live.voucher("p-trace", 1, "10")
        charge = await live.charge("p-trace", voucher_id, "trace-1", "1.5")

        # payments: the request's server span, and the event's outbox row carrying it
        server = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER and s.name == "POST /charges"]
        assert len(server) == 1, [s.name for s in spans.get_finished_spans()]
        request = server[0]
        assert request.resource.attributes["service.name"] == "seteli-payments"
        trace_id = f"{request.context.trace_id:032x}"
        async with live.app.state.runtime.sessions() as session:
            assert (await session.get(Charge, charge["id"])) is not None
            rows = (await session.execute(select(OutboxMessage.traceparent, OutboxMessage.body).where(
                OutboxMessage.routing_key == "charge.accepted.v1"))).all()
        assert len(rows) == 1 and rows[0].traceparent.split("-")[1] == trace_id

        # reporting: its consumer span for that event, in the same trace, the child of payments' request
        def consumed():  # noqa: ANN202
            return [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER
                    and s.resource.attributes["service.name"] == "seteli-reporting"
                    and s.attributes.get("cloudevents.event_type", "").endswith("charge.accepted.v1")]

        found = await eventually(consumed, timeout=20)
        span = found[0]
        assert f"{span.context.trace_id:032x}" == trace_id
        assert span.parent is not None and span.parent.trace_id == request.context.trace_id
        payments_span_ids = {s.context.span_id for s in spans.get_finished_spans()
                             if s.resource.attributes["service.name"] == "seteli-payments"}
        assert span.parent.span_id in payments_span_ids
        # the events published by the test itself (no request, no trace) started traces of their own
        others = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER
                  and s.attributes.get("cloudevents.event_type", "").endswith("voucher.issued.v1")]
        assert others and all(s.context.trace_id != request.context.trace_id for s in others)
        # no personal data: span attributes name types, queues and ids only
        for s in spans.get_finished_spans():
            # (a whole word: a random hex id may hold the letters "c-1")
            assert not re.search(r"(?<![0-9A-Za-z])c-1(?![0-9A-Za-z])", repr(dict(s.attributes or {})))


async def test_with_tracing_off_no_row_keeps_a_traceparent(live):  # noqa: ANN001
    """Off by default: no span, nothing stored, no header."""
    voucher_id = await live.voucher("p-off", 1, "10")
    await live.charge("p-off", voucher_id, "off-1", "1")
    async with live.app.state.runtime.sessions() as session:
        kept = (await session.execute(select(OutboxMessage.traceparent).where(
            OutboxMessage.routing_key == "charge.accepted.v1"))).scalars().all()
    assert kept == [None]
    assert live.app.state.runtime.tracer_provider is None
    sent = await eventually(lambda: _sent(live), timeout=10)
    assert all("traceparent" not in (m.headers or {}) for m in sent)


async def _sent(live):  # noqa: ANN001, ANN202
    out = []
    while (message := await live.spy.get(no_ack=True, fail=False)) is not None:
        if message.routing_key == "charge.accepted.v1":
            out.append(message)
    return out


async def test_charges_coalesced_into_one_message_each_keep_their_trace_into_reporting(live, spans, pg, namespace,
                                                                                       amqp_url):
    """Single charges made together go out as one ``charge.accepted.v2`` (the relay's coalescing): its consumer span
    is the child of the first charge's request and links to every other's, so no charge's trace ends at payments."""
    async with AsyncExitStack() as stack:
        app = reporting.app.create_app(ReportingSettings(
            environment="test", amqp_url=amqp_url, bus_namespace=namespace, relay_idle_seconds=0.05,
            database_url=await pg.create("reporting")))
        await stack.enter_async_context(app.router.lifespan_context(app))
        vouchers = [await live.voucher(f"p-links{i}", 1, "10") for i in range(2)]
        await asyncio.gather(*(live.charge(f"p-links{i % 2}", vouchers[i % 2], f"links-{i}", "1") for i in range(8)))
        requests = {s.context.trace_id for s in spans.get_finished_spans()
                    if s.kind == SpanKind.SERVER and s.name == "POST /charges"}
        assert len(requests) == 8

        def reached() -> set[int]:
            out = set()
            for s in spans.get_finished_spans():
                if (s.kind == SpanKind.CONSUMER and s.resource.attributes["service.name"] == "seteli-reporting"
                        and ".charge.accepted." in s.attributes.get("cloudevents.event_type", "")):
                    out.add(s.context.trace_id)
                    out.update(link.context.trace_id for link in s.links)
            return out

        assert await eventually(lambda: reached() >= requests or None, timeout=20)


def test_a_consumer_span_links_to_the_traces_a_message_lists_and_skips_what_is_not_one():
    first = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    others = ["00-1bf7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01",
              "00-2cf7651916cd43dd8448eb211c80319c-d7ad6b7169203331-00"]
    tracer = TracerProvider().get_tracer("test")
    span = tracing.consumer_span(tracer, {"traceparent": first, "tracelinks": " ".join([others[0], "nonsense",
                                                                                       others[1]]).encode()},
                                 "x process", {})
    span.end()
    assert f"{span.context.trace_id:032x}" == first.split("-")[1]
    assert [f"{link.context.trace_id:032x}" for link in span.links] == [o.split("-")[1] for o in others]
    no_links = tracing.consumer_span(tracer, {"traceparent": first}, "x process", {})
    no_links.end()
    assert list(no_links.links) == []
