"""Prometheus metrics of a service (``prometheus-client``), served at ``GET /metrics``.

Each app has its own registry (``ServiceMetrics``, on ``app.state.metrics``): a test process that starts
several services sees each one's own figures. Code that counts finds the registry of the service it runs in
through ``current_metrics``: the service's lifespan sets it (its consumers, relays, scheduled jobs and workers
are started there and inherit it) and ``HttpMetrics`` sets it for each request. Outside a service (a script, a
unit test) it is a detached registry nobody reads.

Two kinds of figures:

- **counted as they happen**: HTTP requests by method, route *template* (``/vouchers/{voucher_id}``, never the
  raw path) and status, with a latency histogram; messages consumed per queue by outcome and the time a batch
  took; messages dead-lettered per queue by reason (the reason's machine-readable head only); inbox duplicates
  dropped; scheduled job runs by job and outcome; and whatever a service counts of its own (``counter``);
- **read at scrape time** (``add_source``): small bounded queries run when ``/metrics`` is asked, each within
  ``SOURCE_TIMEOUT_SECONDS`` (a failing or slow one is left out and ``seteli_metrics_source_up{source}`` says 0):
  the outbox's depth and the age of its oldest unsent row, each consumer queue's ready messages and its
  dead-letter queue's (passive declares on one short-lived channel), the scheduled jobs' latest runs.

One process per pod (``uvicorn`` with one worker, scaled by replicas): the multiprocess mode of
``prometheus-client`` is not needed; a service run with ``--workers N`` would need it (each worker would
answer with its own counters).

Labels never hold ids, codes, references or names: routes are templates, queues and jobs are the service's own
names, reasons are machine-readable codes (``reason_label``). A scheduled job's label is ``scheduled_job`` (Prometheus
keeps ``job`` for the scrape job), the service is the ``service`` label the scrape configuration gives each target
(``deploy/monitoring/prometheus.yml``)."""
from __future__ import annotations

import asyncio
import re
import time
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Awaitable, Callable, Iterable

import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from prometheus_client import (CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Histogram, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .logging import get_logger

log = get_logger(__name__)

# the ``*_created`` series double every counter's lines for nothing Prometheus 2 uses
disable_created_metrics()

#: a source's answer: the metric families it read
Source = Callable[[], Awaitable[Iterable[Metric]]]
SOURCE_TIMEOUT_SECONDS = 2.0
#: HTTP latency buckets (seconds): a charge takes ~1-5 ms, a bulk import seconds
HTTP_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
UNMATCHED = "(unmatched)"


def reason_label(reason: str | None) -> str:
    """A dead-letter or refusal reason as a label: its head before the first ``:`` when that is a
    machine-readable code (``contract_violation``, ``personal_identity_code``, ...), ``failed_repeatedly`` for a
    handler that kept failing, else ``other``: never free text (it could carry a value)."""
    if not reason:
        return "unknown"
    head = reason.split(":", 1)[0].strip()
    if re.match(r"^failed \d+ times$", head):
        return "failed_repeatedly"
    return head if _CODE.match(head) else "other"


class _Scraped(Collector):
    """The families the sources read at the latest scrape (``ServiceMetrics.refresh``)."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.families)


class ServiceMetrics:
    """One service's registry, its common instruments and its scrape-time sources."""

    def __init__(self, service: str, *, process: bool = True):
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.http_requests = Counter("seteli_http_requests", "HTTP requests answered, by method, route template "
                                     "and status", ["method", "route", "status"], registry=r)
        self.http_duration = Histogram("seteli_http_request_duration_seconds", "Time to answer an HTTP request, "
                                       "by method, route template and status class", ["method", "route", "status"],
                                       buckets=HTTP_BUCKETS, registry=r)
        self.consumer_messages = Counter(
            "seteli_consumer_messages", "Messages a consumer took, by queue and outcome (processed, duplicate, "
            "ignored, retried, dead_lettered)", ["queue", "outcome"], registry=r)
        self.consumer_batch_duration = Histogram(
            "seteli_consumer_batch_duration_seconds", "Time a consumer took over a batch of messages, by queue",
            ["queue"], buckets=BATCH_BUCKETS, registry=r)
        self.dead_lettered = Counter("seteli_messages_dead_lettered", "Messages a consumer put on its dead-letter "
                                     "queue, by queue and reason", ["queue", "reason"], registry=r)
        self.inbox_duplicates = Counter("seteli_inbox_duplicates_dropped", "Messages the inbox had seen before "
                                        "(redeliveries) and dropped, by queue", ["queue"], registry=r)
        self.job_runs = Counter("seteli_job_runs", "Scheduled job runs this instance made, by job and outcome "
                                "(ok, failed)", ["scheduled_job", "outcome"], registry=r)
        self.job_duration = Histogram("seteli_job_duration_seconds", "Time a scheduled job's run took, by job",
                                      ["scheduled_job"], buckets=JOB_BUCKETS, registry=r)
        self._own: dict[str, Counter | Histogram] = {}
        self._http_children: dict[tuple[str, str, int], tuple] = {}
        self._sources: dict[str, Source] = {}
        self._scraped = _Scraped()
        r.register(self._scraped)

    # ------------------------------------------------------------------ a service's own instruments
    def counter(self, name: str, documentation: str, labels: Iterable[str] = ()) -> Counter:
        """The service's counter ``name`` (created at its first use)."""
        found = self._own.get(name)
        if found is None:
            found = self._own[name] = Counter(name, documentation, list(labels), registry=self.registry)
        return found  # type: ignore[return-value]

    # ------------------------------------------------------------------ scrape-time sources
    def add_source(self, name: str, source: Source) -> None:
        """Read ``source`` at each scrape (a bounded query: it must answer within ``SOURCE_TIMEOUT_SECONDS``)."""
        self._sources[name] = source

    def remove_source(self, name: str) -> None:
        self._sources.pop(name, None)

    async def refresh(self, timeout: float = SOURCE_TIMEOUT_SECONDS) -> None:
        names = list(self._sources)
        started = time.perf_counter()
        answers = await asyncio.gather(*(asyncio.wait_for(_read(self._sources[n]), timeout) for n in names),
                                       return_exceptions=True)
        up = GaugeMetricFamily("seteli_metrics_source_up", "Whether a scrape-time source of figures answered "
                               "(1) or failed or was too slow (0)", labels=["source"])
        families: list[Metric] = []
        for name, answer in zip(names, answers):
            if isinstance(answer, BaseException):
                up.add_metric([name], 0)
                log.warning("metrics.source_failed", source=name, error=type(answer).__name__)
                continue
            up.add_metric([name], 1)
            families.extend(answer)
        took = GaugeMetricFamily("seteli_metrics_scrape_seconds", "Time the scrape-time sources took together")
        took.add_metric([], time.perf_counter() - started)
        self._scraped.families = [*families, up, took]

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ what the shared code counts
    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "OTHER"  # (a client's made-up method adds no series)
        children = self._http_children.get((method, route, status))
        if children is None:  # the labelled children found once per (method, route, status): a dict look-up after
            children = self._http_children[(method, route, status)] = (
                self.http_requests.labels(method, route, str(status)),
                self.http_duration.labels(method, route, f"{status // 100}xx"))
        children[0].inc()
        children[1].observe(seconds)

    def consumed(self, queue: str, outcome: str, count: int = 1) -> None:
        if count:
            self.consumer_messages.labels(queue, outcome).inc(count)

    def consumer_batch(self, queue: str, seconds: float) -> None:
        self.consumer_batch_duration.labels(queue).observe(seconds)

    def dead_letter(self, queue: str, reason: str | None) -> None:
        self.dead_lettered.labels(queue, reason_label(reason)).inc()
        self.consumed(queue, "dead_lettered")

    def duplicates(self, queue: str, count: int) -> None:
        if count:
            self.inbox_duplicates.labels(queue).inc(count)
            self.consumed(queue, "duplicate", count)

    def job_run(self, job: str, outcome: str, seconds: float) -> None:
        self.job_runs.labels(job, outcome).inc()
        self.job_duration.labels(job).observe(seconds)


async def _read(source: Source) -> list[Metric]:
    return list(await source())


#: the registry of the service the running code belongs to (see the module's docstring)
_DETACHED = ServiceMetrics("detached", process=False)
current_metrics: ContextVar[ServiceMetrics] = ContextVar("current_metrics", default=_DETACHED)


def metrics() -> ServiceMetrics:
    """The running service's registry (a detached one outside a service)."""
    return current_metrics.get()


# ------------------------------------------------------------------ HTTP
class HttpMetrics:
    """Pure ASGI middleware, outermost: counts and times each request by its route template (the matched
    route's path; ``(unmatched)`` when none matched, e.g. a 404 or a request refused before routing) and the
    status answered; and makes the app's registry the ``current_metrics`` of the request's code."""

    def __init__(self, app, *, registry: ServiceMetrics):  # noqa: ANN001
        self.app = app
        self.metrics = registry

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        current_metrics.set(self.metrics)
        started = time.perf_counter()
        status = [0]

        async def send_status(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException:
            status[0] = status[0] or 500
            raise
        finally:
            # no answer begun and nothing raised: the client left first (nginx's 499), not a failure of ours
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.http_request(scope["method"], route, status[0] or 499, time.perf_counter() - started)


def install_metrics(app, service: str) -> ServiceMetrics:  # noqa: ANN001
    """The app's registry (``app.state.metrics``), the request middleware (add it last: outermost) and
    ``GET /metrics`` (left out of the OpenAPI document: it is for the monitoring, not the API's callers; open
    like ``/health/ready``: it holds no personal data and no ids)."""
    registry = ServiceMetrics(service)
    app.state.metrics = registry
    app.add_middleware(HttpMetrics, registry=registry)
    # a plain route (as /docs): not an API operation, so neither in the contract nor in the access matrix
    app.add_route("/metrics", serve_metrics, methods=["GET"], include_in_schema=False)
    return registry


#: headers a reverse proxy adds (the Ingress controller always sets X-Forwarded-For); Prometheus scrapes the pods
#: directly, without them
_FORWARDED = ("x-forwarded-for", "forwarded", "x-real-ip")


async def serve_metrics(request: Request) -> Response:
    """The service's figures in Prometheus' text format 0.0.4 (the scrape-time sources read first). A request that
    came through a proxy (the public Ingress) is answered 404: the figures are for the monitoring, which scrapes
    the instances themselves."""
    if any(h in request.headers for h in _FORWARDED):
        raise StarletteHTTPException(404)
    registry: ServiceMetrics = request.app.state.metrics
    await registry.refresh()
    return Response(registry.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)


# ------------------------------------------------------------------ the common scrape-time sources
def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels or [])


def _seconds_since(at: datetime | None, now: datetime) -> float:
    if at is None:
        return 0.0
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return max(0.0, (now - at).total_seconds())


def outbox_source(engine) -> Source:  # noqa: ANN001
    """The outbox's unsent rows that are due (parked ones, for nobody to take yet, are left out: their owner
    counts them) and the age of the oldest: one statement on the partial index of unsent rows."""
    from .messaging import OutboxMessage
    from .outbox import PARKED_UNTIL

    T = OutboxMessage.__table__  # noqa: N806
    unsent = T.c.sent_at.is_(None) & sa.or_(T.c.next_attempt_at.is_(None), T.c.next_attempt_at < PARKED_UNTIL)
    query = sa.select(sa.func.count(), sa.func.min(T.c.created_at)).where(unsent)

    async def read() -> list[Metric]:
        async with engine.connect() as conn:
            depth, oldest = (await conn.execute(query)).one()
        age = _gauge("seteli_outbox_oldest_age_seconds", "Age of the oldest unsent (not parked) outbox row; 0 "
                     "when none waits")
        age.add_metric([], _seconds_since(oldest, datetime.now(timezone.utc)))
        rows = _gauge("seteli_outbox_depth", "Outbox rows written but not yet published (parked ones left out)")
        rows.add_metric([], depth)
        return [rows, age]

    return read


def _interval_seconds(schedule: str) -> float | None:
    """How often a job is due, from its schedule as ``jobs`` writes it (``daily 03:00 UTC``, ``every 60 s``)."""
    if schedule.startswith("daily"):
        return 86400.0
    m = re.match(r"^every ([0-9.]+) s$", schedule)
    return float(m.group(1)) if m else None


def jobs_source(engine) -> Source:  # noqa: ANN001
    """Each scheduled job's latest run as the service's database records it (the same from every instance):
    its due time, its end, whether it failed or runs, and how often the job is due: enough to see a run that
    failed or was missed (its due time falls behind by more than an interval)."""
    from .jobs import ScheduledJob

    T = ScheduledJob.__table__  # noqa: N806
    query = sa.select(T.c.name, T.c.schedule, T.c.due_at, T.c.finished_at, T.c.outcome).order_by(T.c.name).limit(200)

    async def read() -> list[Metric]:
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        due = _gauge("seteli_job_last_due_timestamp_seconds", "Due time of the job's latest run started",
                     ["scheduled_job"])
        finished = _gauge("seteli_job_last_finished_timestamp_seconds", "When the job's latest run ended",
                          ["scheduled_job"])
        failed = _gauge("seteli_job_last_run_failed", "1 when the job's latest run failed", ["scheduled_job"])
        running = _gauge("seteli_job_running", "1 while the job's latest run goes on", ["scheduled_job"])
        interval = _gauge("seteli_job_interval_seconds", "How often the job is due", ["scheduled_job"])
        for name, schedule, due_at, finished_at, outcome in rows:
            if due_at is not None:
                due.add_metric([name], _timestamp(due_at))
            if finished_at is not None:
                finished.add_metric([name], _timestamp(finished_at))
            failed.add_metric([name], 1 if outcome == "failed" else 0)
            running.add_metric([name], 1 if outcome == "running" else 0)
            every = _interval_seconds(schedule or "")
            if every is not None:
                interval.add_metric([name], every)
        return [due, finished, failed, running, interval]

    return read


def _timestamp(at: datetime) -> float:
    return (at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)).timestamp()


def queues_source(bus, consumers: Callable[[], list]) -> Source:  # noqa: ANN001
    """Each consumer's queue and its dead-letter queue as the broker counts them (ready messages, consumers),
    by passive declares on a channel of their own (closed after: a queue gone closes it, nothing else), and the
    messages taken from the broker that wait in this process for their batch."""

    async def read() -> list[Metric]:
        ready = _gauge("seteli_queue_messages_ready", "Messages waiting in a consumer's queue (its lag)", ["queue"])
        listeners = _gauge("seteli_queue_consumers", "Consumers attached to the queue (all instances)", ["queue"])
        dead = _gauge("seteli_dead_letter_queue_messages", "Messages on a consumer's dead-letter queue", ["queue"])
        buffered = _gauge("seteli_consumer_buffered_messages", "Messages this instance has taken from the queue "
                          "and not yet processed", ["queue"])
        found = consumers()
        if found:
            channel = await bus.connection.channel()
            try:
                for consumer in found:
                    q = await channel.declare_queue(consumer.name, passive=True)
                    ready.add_metric([consumer.name], q.declaration_result.message_count)
                    listeners.add_metric([consumer.name], q.declaration_result.consumer_count)
                    d = await channel.declare_queue(consumer.dead_letter_queue_name, passive=True)
                    dead.add_metric([consumer.name], d.declaration_result.message_count)
                    buffered.add_metric([consumer.name], consumer._buffer.qsize())  # noqa: SLF001
            finally:
                await channel.close()
        return [ready, listeners, dead, buffered]

    return read
