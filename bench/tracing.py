"""What tracing (``seteli_shared.tracing``) costs on the paths it touches, off (the default) and on, each against a
raw baseline measured in the same run. No server is needed: these are the per-event costs in the process.

1. **outbox row** of a ``ChargeAccepted`` (``outbox.DirectEventRows.row``, what a bulk charge writes per charge):
   tracing off, and on with a request's span current (the row then keeps its ``traceparent``); baseline: the raw
   JSON encoding of the same envelope (``pydantic_core.to_json`` of a dict), the least any row costs.
2. **publish frames** of one message (``bus.PublishFrames.message``, what the relay writes per row): without a
   header, and with the ``traceparent`` header; baseline: the frames without it.
3. **consumer span** per message (``tracing.consumer_span`` from the message's header, ended; spans go to a
   processor that drops them, so only the making is counted); baseline: a consumer's inbox row dict (the least a
   consumer does per message).

Each figure is microseconds per operation, the best of ``--repeat`` rounds of ``--n`` operations, and its ratio to
the baseline of its group; the last line is the figures as JSON.

    .venv/bin/python bench/tracing.py                # 20,000 operations, best of 5
    .venv/bin/python bench/tracing.py --n 100000 --repeat 7
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import date, datetime, timezone
from decimal import Decimal

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from pydantic_core import to_json

from seteli_shared import tracing
from seteli_shared.bus import PublishFrames
from seteli_shared.events import ChargeAccepted
from seteli_shared.ids import new_id
from seteli_shared.outbox import DirectEventRows

VALUES = {"charge_id": "c-0001", "voucher_id": "v-0001", "funder_id": "091", "provider_id": "p-0001",
          "category": "home_care", "service_date": date(2026, 6, 19), "units": Decimal("1.50"),
          "unit_price_cents": 2500, "amount_cents": 3750, "own_share_cents": 0,
          "accepted_at": datetime(2026, 6, 20, 9, tzinfo=timezone.utc)}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class _Drop(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        pass


def best(fn, n: int, repeat: int) -> float:  # noqa: ANN001
    """Microseconds per call, the best of ``repeat`` rounds of ``n`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - start) / n * 1e6)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, repeat = args.n, args.repeat
    figures: dict[str, float] = {}

    # 1. outbox rows
    rows = DirectEventRows(ChargeAccepted, "payments")
    rows.row(dict(VALUES))  # the first row is made the ordinary way too and compared
    raw_env = {"specversion": "1.0", "id": new_id(), "source": "/seteli/payments", "type": "t",
               "time": VALUES["accepted_at"], "subject": "c-0001", "datacontenttype": "application/json",
               "data": dict(VALUES), "correlationid": None, "causationid": None}
    figures["row_raw_json_us"] = best(lambda: to_json(raw_env), n, repeat)
    assert tracing.current_traceparent() is None  # off: no service has a provider
    figures["traceparent_off_us"] = best(tracing.current_traceparent, n, repeat)  # what "off" adds to a row
    figures["row_tracing_off_us"] = best(lambda: rows.row(dict(VALUES)), n, repeat)
    provider = TracerProvider()
    provider.add_span_processor(_Drop())
    tracing._on = True  # as when a service of this process traces
    tracer = provider.get_tracer("bench")
    with trace.use_span(tracer.start_span("POST /charges/bulk"), end_on_exit=True):
        assert rows.row(dict(VALUES))["traceparent"] is not None
        figures["row_tracing_on_us"] = best(lambda: rows.row(dict(VALUES)), n, repeat)

    # 2. publish frames
    frames = PublishFrames(1, 131072 - 8, "svc-payments", "payments")
    body = to_json(raw_env)
    figures["frames_raw_us"] = best(lambda: frames.message("seteli.events", "charge.accepted.v1", body, "m-1",
                                                           "fi.seteli.charge.accepted.v1"), n, repeat)
    figures["frames_traceparent_us"] = best(lambda: frames.message(
        "seteli.events", "charge.accepted.v1", body, "m-1", "fi.seteli.charge.accepted.v1",
        traceparent=TRACEPARENT), n, repeat)

    # 3. consumer spans
    headers = {"traceparent": TRACEPARENT}
    now = datetime.now(timezone.utc)
    figures["consume_raw_us"] = best(lambda: {"consumer": "seteli.reporting", "message_id": "m-1",
                                              "received_at": now}, n, repeat)
    attributes = {"messaging.system": "rabbitmq", "messaging.destination.name": "seteli.reporting",
                  "messaging.message.id": "m-1", "cloudevents.event_type": "fi.seteli.charge.accepted.v1"}
    figures["consume_span_us"] = best(lambda: tracing.consumer_span(
        tracer, headers, "fi.seteli.charge.accepted.v1 process", attributes).end(), n, repeat)
    tracing._on = False
    provider.shutdown()

    print(f"outbox row (ChargeAccepted)   raw JSON {figures['row_raw_json_us']:.2f} us | tracing off "
          f"{figures['row_tracing_off_us']:.2f} us ({figures['row_tracing_off_us'] / figures['row_raw_json_us']:.2f}x raw)"
          f" | on {figures['row_tracing_on_us']:.2f} us ({figures['row_tracing_on_us'] / figures['row_raw_json_us']:.2f}x"
          f" raw, {figures['row_tracing_on_us'] / figures['row_tracing_off_us']:.2f}x off); off adds "
          f"{figures['traceparent_off_us']:.3f} us a row (one global read)")
    print(f"publish frames (one message)  no header {figures['frames_raw_us']:.2f} us | with traceparent "
          f"{figures['frames_traceparent_us']:.2f} us ({figures['frames_traceparent_us'] / figures['frames_raw_us']:.2f}x)")
    print(f"consumer, per message         inbox row dict {figures['consume_raw_us']:.2f} us | span from the header "
          f"{figures['consume_span_us']:.2f} us ({figures['consume_span_us'] / figures['consume_raw_us']:.1f}x); "
          "tracing off makes no span")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
