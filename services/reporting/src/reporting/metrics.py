"""The reporting service's own figure for Prometheus (``seteli_shared.metrics`` has the common ones, among them its
consumer's lag, the events it folded per second and its dead letters): how current its read models are.

- ``seteli_reporting_latest_event_timestamp_seconds``: the time of the latest event archived (the events' own
  time, on the index the rebuild reads in order: one row read per scrape). At month end the funders' reports
  are as current as this; compared with ``time()`` it shows how far behind the folding is while events still
  arrive (``seteli_queue_messages_ready`` says how many wait)."""
from __future__ import annotations

from datetime import timezone

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from seteli_shared.metrics import ServiceMetrics


def install(registry: ServiceMetrics, sessions) -> None:  # noqa: ANN001
    from .models import ReceivedEvent

    query = select(func.max(ReceivedEvent.time))

    async def read() -> list[Metric]:
        async with sessions() as session:
            latest = (await session.execute(query)).scalar_one_or_none()
        gauge = GaugeMetricFamily("seteli_reporting_latest_event_timestamp_seconds",
                                  "Time of the latest event reporting has archived and folded (none: no event yet)")
        if latest is not None:
            gauge.add_metric([], (latest if latest.tzinfo else latest.replace(tzinfo=timezone.utc)).timestamp())
        return [gauge]

    registry.add_source("reporting", read)
