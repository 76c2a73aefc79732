"""What every service shares at run time: the FastAPI app with its lifespan (migrations, database,
bus, outbox relay, consumers), the request guard and error bodies (``web.py``), health endpoints
and the audit trail."""
from __future__ import annotations

import asyncio
import gc
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from opentelemetry.sdk.trace import TracerProvider
from sqlmodel import select

from .audit import AuditEntry
from .auth import FUNDER_STAFF, Principal, Role, TenantScope, require, tenant_scope
from .bus import BrokerUnavailable, BrokerUnreachable, Bus
from .consumer import BatchHandler, Consumer, Handler, OnRefused
from .db import make_engine, outage_limits, ping, release_kept, session_factory, upgrade_async
from .events import ReceivedEnvelope, routing_keys_of
from .jobs import JobRunner, current_runner
from .faults import TIMED_OUT, database_fault, document_outages, install_fault_handlers
from .docs import install_docs
from .clock import SystemClock
from .logging import configure_logging, get_logger
from .metrics import current_metrics, install_metrics, jobs_source, outbox_source, queues_source
from . import progress, tracing
from .errors import DomainError
from .ops_api import router as ops_router
from .outbox import OutboxRelay
from .relay import RelayProcess
from .schemas import Page, PageDep, paginate, place_bounds
from .settings import ServiceSettings
from .statistics import TableStatistics
from .web import RequestGuard, error_responses, install_error_handlers, install_openapi

log = get_logger(__name__)


@dataclass
class ConsumerSpec:
    """A further consumer of a service, on another topic exchange of the namespace than the domain
    events' (e.g. decisions from funders' case systems): its own quorum queue ``<ns>.<service>.<name>``
    with its own dead-letter queue, bound to ``bind_keys`` on ``<ns>.<exchange>``. ``contracts`` maps each
    message type to the model its ``data`` must satisfy (see ``consumer.Consumer``)."""

    name: str
    exchange: str
    bind_keys: list[str]
    handlers: dict[str, Handler]
    contracts: dict[str, type[BaseModel]]
    on_refused: OnRefused | None = None
    #: check the body, properties and headers for personal data (messages from outside systems)
    whole_message_privacy: bool = True
    #: record each message in the audit trail as the consumer takes it (else the handlers record)
    audit: bool = False
    #: message type -> handler of a run of such messages in one call (``consumer.BatchHandler``; the run's
    #: AMQP messages in ``consumer.current_run``)
    batch_handlers: dict[str, BatchHandler] = field(default_factory=dict)
    #: the model the messages' envelopes are read with (``consumer.Consumer``'s ``envelope``): one that knows the
    #: CloudEvents extension attributes these messages may carry
    envelope: type[ReceivedEnvelope] = ReceivedEnvelope

    def queue(self, namespace: str, service: str) -> str:
        return f"{namespace}.{service}.{self.name}"


@dataclass
class ServiceSpec:
    """What makes one service: its name, migrations, routes and the events it consumes."""

    name: str
    migrations_dir: Path
    routers: list[APIRouter]
    handlers: dict[str, Handler] = field(default_factory=dict)  # event type -> handler
    #: event type -> handler of a run of such events in one call (see ``consumer.BatchHandler``)
    batch_handlers: dict[str, BatchHandler] = field(default_factory=dict)
    bind_keys: list[str] | None = None
    fallback: Handler | None = None
    #: path prefixes of bulk endpoints: their bodies may be as large as ``max_bulk_body_bytes``
    bulk_paths: tuple[str, ...] = ()
    #: (path, media type) of bulk bodies the route reads as they arrive: the guard passes them on
    #: unread (their size still limited) and the route scans each line itself
    streamed_bodies: tuple[tuple[str, str], ...] = ()
    #: consumers on other exchanges than the domain events' (each its own queue and dead-letter queue)
    extra_consumers: list[ConsumerSpec] = field(default_factory=list)
    #: figures of the service's own for ``/health/ready``'s ``details`` (e.g. payments' parked notices); they
    #: inform, they never make the service unready
    readiness_details: Callable[["Runtime"], Awaitable[dict[str, int]]] | None = None
    #: the service's own background work while it runs (schedulers, workers), started once the runtime is up
    #: and stopped before it goes down: ``jobs(app)`` is an async context manager
    jobs: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None
    title: str = ""
    description: str = ""
    version: str = "0.1.0"

    # The service's subscriptions, read by its consumer, the broker definitions and the contracts.
    @property
    def consumes_events(self) -> bool:
        return bool(self.handlers or self.batch_handlers or self.fallback)

    @property
    def consumed_event_types(self) -> list[str]:
        """The event types the service handles by name (``fallback`` takes whatever else arrives)."""
        return list({**self.handlers, **self.batch_handlers})

    @property
    def routing_keys(self) -> list[str]:
        """What its queue is bound to on the events exchange (as ``Consumer`` binds it)."""
        if not self.consumes_events:
            return []
        return list(self.bind_keys or routing_keys_of(self.consumed_event_types))


class Runtime:
    """The running parts of one service instance."""

    def __init__(self, spec: ServiceSpec, settings: ServiceSettings, tracer_provider: TracerProvider | None = None):
        self.spec = spec
        self.settings = settings
        self.engine = make_engine(settings.database_url, **({} if settings.database_url.startswith("sqlite") else {
            "pool_pre_ping": settings.db_pool_pre_ping, "pool_recycle": settings.db_pool_recycle_seconds,
            "pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow,
            **outage_limits(settings.db_connect_timeout_seconds, settings.db_statement_timeout_seconds,
                            settings.db_pool_timeout_seconds)}))
        self.sessions: async_sessionmaker[AsyncSession] = session_factory(self.engine)
        self.bus = Bus(settings)
        self.relay = OutboxRelay.of(self.engine, self.bus, settings)
        #: the relay as a child process (``RELAY=process``); ``relay`` runs in this loop with ``in_process``
        self.relay_process: RelayProcess | None = None
        #: the scheduled jobs of this instance, each under its lease (``schedule.daily``/``every`` find it)
        self.jobs = JobRunner(self.engine, settings.job_lease_seconds)
        #: the service's tracer provider (None: tracing off), made with the app (``tracing``)
        self.tracer_provider = tracer_provider
        self.tracer = tracer_provider.get_tracer("seteli.consumer") if tracer_provider is not None else None
        self.consumer: Consumer | None = None
        self.extra_consumers: list[Consumer] = []
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        if self.settings.migrate_on_start:
            await upgrade_async(self.spec.migrations_dir, self.settings.database_url, self.settings)
        # the routers' lifespans, entered after this, start their jobs with ``schedule``: under this runner
        current_runner.set(self.jobs)
        await self.bus.connect()
        if self.spec.consumes_events:
            self.consumer = Consumer(
                self.bus, self.sessions, self.settings.queue_name, self.spec.handlers,
                bind_keys=self.spec.bind_keys, fallback=self.spec.fallback, batch_handlers=self.spec.batch_handlers,
                prefetch=self.settings.consumer_prefetch, batch_size=self.settings.consumer_batch_size,
                batch_bytes=self.settings.consumer_batch_bytes, held_bytes=self.settings.consumer_held_bytes,
                batch_wait=self.settings.consumer_batch_wait_seconds,
                delivery_limit=self.settings.delivery_limit, audit=True, tracer=self.tracer,
            )
            await self.consumer.start()
        for extra in self.spec.extra_consumers:
            consumer = Consumer(
                self.bus, self.sessions, extra.queue(self.settings.bus_namespace, self.spec.name), extra.handlers,
                bind_keys=extra.bind_keys, batch_handlers=extra.batch_handlers, exchange=extra.exchange,
                contracts=extra.contracts, envelope=extra.envelope,
                whole_message_privacy=extra.whole_message_privacy, on_refused=extra.on_refused,
                prefetch=self.settings.consumer_prefetch, batch_size=self.settings.consumer_batch_size,
                batch_bytes=self.settings.consumer_batch_bytes, held_bytes=self.settings.consumer_held_bytes,
                batch_wait=self.settings.consumer_batch_wait_seconds,
                delivery_limit=self.settings.delivery_limit, audit=extra.audit, tracer=self.tracer,
            )
            await consumer.start()
            self.extra_consumers.append(consumer)
        if self.engine.dialect.name == "postgresql" and self.settings.db_analyse_seconds > 0:
            statistics = TableStatistics(self.engine, self.settings.db_analyse_seconds)
            self._tasks.append(asyncio.create_task(statistics.run(), name="table-statistics"))
        if self.settings.relay == "in_process":
            self._tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        elif self.settings.relay == "process":
            self.relay_process = RelayProcess(self.settings)
            await self.relay_process.start()
        log.info("service.started", database=self.engine.dialect.name, queue=self.settings.queue_name,
                 relay=self.settings.relay)

    async def stop(self) -> None:
        self.relay.stop()
        if self.relay_process is not None:
            await self.relay_process.stop()
        if self.consumer:
            await self.consumer.stop()
        for consumer in self.extra_consumers:
            await consumer.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.close()
        await release_kept(self.engine)  # the connections driver_connection keeps, back to the pool
        await self.engine.dispose()


def create_service_app(spec: ServiceSpec, settings: ServiceSettings) -> FastAPI:
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    tracer_provider = tracing.provider_for(settings.service_name)  # None unless OTLP (or a test) asks for traces

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(spec, settings, tracer_provider)
        app.state.runtime = runtime
        # what the lifespan starts (consumers, relay, jobs, workers) counts into this app's registry
        current_metrics.set(app.state.metrics)
        app.state.metrics.add_source("outbox", outbox_source(runtime.engine))
        app.state.metrics.add_source("jobs", jobs_source(runtime.engine))
        app.state.metrics.add_source("queues", queues_source(
            runtime.bus, lambda: [c for c in (runtime.consumer, *runtime.extra_consumers) if c is not None]))
        await runtime.start()
        # what the start left (modules, models, schemas, the runtime) lives as long as the service: out of the
        # collector's sight, so that its full collections do not walk it again and again (15-20 % of a bulk
        # charge's Python went to them); given back at the stop (a test process starts and stops many apps)
        gc.freeze()
        thresholds = gc.get_threshold()
        if settings.gc_young_threshold:
            gc.set_threshold(settings.gc_young_threshold, *thresholds[1:])
        try:
            async with spec.jobs(app) if spec.jobs is not None else nullcontext():
                yield
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            await runtime.stop()
            tracing.shutdown(tracer_provider)

    # FastAPI's native telemetry off: it reads the process-wide OpenTelemetry providers, which no service sets (each
    # has its own, ``tracing.instrument``); left on, it asked them whether they were configured at every request
    app = FastAPI(title=spec.title or f"seteli {spec.name}", description=spec.description,
                  version=spec.version, lifespan=lifespan, docs_url=None, redoc_url=None,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    install_docs(app)  # Swagger UI served from this service (works offline)
    app.state.settings = settings
    app.state.clock = SystemClock()  # each app its own; a test sets a FixedClock in its place
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes,
                       max_bulk_body_bytes=settings.max_bulk_body_bytes, bulk_paths=spec.bulk_paths,
                       streamed_bodies=spec.streamed_bodies)
    install_metrics(app, spec.name)  # outermost: it sees the guard's refusals too; serves /metrics
    install_error_handlers(app)
    install_fault_handlers(app, settings.retry_after_seconds)
    install_openapi(app)
    _finish_openapi(app)
    tracing.instrument(app, tracer_provider)
    app.include_router(health_router)
    app.include_router(audit_router)
    for router in spec.routers:
        app.include_router(router)
    app.include_router(jobs_router)
    if spec.consumes_events or spec.extra_consumers:  # its dead letters, for the operator
        app.include_router(ops_router)
    return app


def _finish_openapi(app: FastAPI) -> None:
    """What the generated document needs besides the error bodies (``web.install_openapi``): the 503 every
    operation can give, and the bounds of optional strict numbers where JSON Schema has them."""
    build = app.openapi
    finished_once: list[dict] = []

    def finished() -> dict:
        schema = build()  # built once, then cached by the app
        if not any(done is schema for done in finished_once):
            document_outages(schema)
            place_bounds(schema)
            finished_once.append(schema)
        return schema

    app.openapi = finished  # type: ignore[method-assign]


# ------------------------------------------------------------------ dependencies
async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    # async, as every dependency that does no blocking work: a plain def runs in the thread pool
    return request.app.state.runtime.sessions


SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]

# ------------------------------------------------------------------ health
health_router = APIRouter(tags=["health"])


@health_router.get("/health/live")
async def live() -> dict:
    """The process is up."""
    return {"status": "ok"}


class Readiness(BaseModel):
    status: str  # "ok" | "unavailable"
    #: "database", "broker": "ok" or "failing: <reason>: <what was seen>"
    checks: dict[str, str]
    #: the failing checks' machine-readable reasons: database_unavailable, broker_unreachable, broker_stalled
    reasons: list[str] = []
    details: dict[str, int] = {}  # the service's own figures (``ServiceSpec.readiness_details``)


async def _within(coro, timeout: float) -> None:  # noqa: ANN001
    """Await ``coro`` for at most ``timeout`` seconds (``TimeoutError`` after). Unlike ``wait_for``, never waits
    for the cancelled work to wind down: a connection to a stalled server may take its own timeout to close."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # read, so that asyncio does not log it
        raise TimeoutError(f"no answer within {timeout:g} s")
    task.result()


async def _database_check(runtime: Runtime, timeout: float) -> tuple[str, str | None]:
    try:
        await _within(ping(runtime.engine), timeout)
        return "ok", None
    except Exception as exc:  # noqa: BLE001  (whatever it is, the service cannot do its work)
        cause = database_fault(exc) or (TIMED_OUT if isinstance(exc, TimeoutError) else "error")
        return f"failing: database_unavailable: {cause} ({type(exc).__name__})", "database_unavailable"


async def _broker_check(runtime: Runtime, timeout: float) -> tuple[str, str | None]:
    try:
        await _within(runtime.bus.probe(timeout), timeout + 0.5)
        return "ok", None
    except BrokerUnavailable as exc:
        return f"failing: {exc.reason}: {exc}", exc.reason
    except TimeoutError:
        return f"failing: broker_stalled: no answer within {timeout:g} s", "broker_stalled"
    except Exception as exc:  # noqa: BLE001  (a channel closed under the probe, ...)
        return f"failing: broker_unreachable: {type(exc).__name__}", BrokerUnreachable.reason


@health_router.get("/health/ready", response_model=Readiness,
                   responses={503: {"model": Readiness, "description": "not ready: a check is failing"}})
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """The service can do its work: its database answers a statement and its broker confirms a publish (a
    bounded round trip), each within ``HEALTH_CHECK_TIMEOUT_SECONDS``. A broker that keeps the connection
    open but confirms nothing is as down as one that is gone; each failing check names its reason."""
    timeout = runtime.settings.health_check_timeout_seconds
    (database, db_reason), (broker, broker_reason) = await asyncio.gather(
        _database_check(runtime, timeout), _broker_check(runtime, timeout))
    reasons = [r for r in (db_reason, broker_reason) if r]
    if reasons:
        log.warning("health.not_ready", reasons=reasons)
    body = {"status": "unavailable" if reasons else "ok", "checks": {"database": database, "broker": broker},
            "reasons": reasons}
    if runtime.spec.readiness_details is not None and db_reason is None:
        try:
            body["details"] = await asyncio.wait_for(runtime.spec.readiness_details(runtime), timeout)
        except Exception as exc:  # noqa: BLE001  (figures are extra: their failure is not the service's)
            log.warning("health.details_failed", error=repr(exc)[:300])
    return JSONResponse(body, status_code=503 if reasons else 200)


class JobRun(BaseModel):
    """A scheduled job's latest run."""

    due_at: datetime | None
    started_at: datetime
    finished_at: datetime | None
    #: ok | failed | running (a run whose holder died stays "running" until another instance takes it over)
    outcome: str | None
    #: a count the run returned, or the type of the error it failed with
    detail: str | None
    duration_ms: int | None


class JobStatus(BaseModel):
    name: str
    schedule: str
    #: the instance holding the job's lease (host:pid:random), None when nobody holds it
    holder: str | None
    #: whether it is the instance that answered
    held_here: bool
    lease_until: datetime | None
    #: the next due time (when the answering instance schedules the job itself)
    next_due_at: datetime | None
    last_run: JobRun | None


class JobsHealth(BaseModel):
    #: the instance that answered
    instance: str
    jobs: list[JobStatus]


@health_router.get("/health/jobs", response_model=JobsHealth, responses=error_responses(401, 403, 503))
async def jobs_health(runtime: RuntimeDep,
                      _principal: Annotated[Principal, require(Role.OPERATOR, scope="none")]) -> JobsHealth:
    """The service's scheduled jobs, the same from every instance (they are kept in its database): each one's
    schedule, which instance holds its lease until when, and its latest run (due time, start, end, outcome,
    duration). Operator staff only (it names the instances' hosts)."""
    jobs = await runtime.jobs.status()  # a database that is down: 503 database_unavailable (faults)
    return JobsHealth(instance=runtime.jobs.instance, jobs=[JobStatus(**j) for j in jobs])


class LongJobProgress(BaseModel):
    """A long job (a settlement run, a bulk import, a rebuild) while it runs and after."""

    id: str
    kind: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    #: the items it has to do, when known
    total: int | None
    done: int
    #: running | ok | failed
    outcome: str
    #: the error's type when it failed
    detail: str | None


#: long jobs' progress (``progress``), in every service, after its own routes
jobs_router = APIRouter(tags=["operations"])


@jobs_router.get("/jobs/{job_id}", response_model=LongJobProgress, responses=error_responses(401, 403, 404))
async def long_job(job_id: Annotated[str, PathParam(max_length=100)], sessions: SessionsDep,
                   _principal: Annotated[Principal, require(Role.OPERATOR, scope="none")]) -> LongJobProgress:
    """A long job's progress: items done of how many, since when, how it ended. Its id is the `X-Correlation-Id`
    of the request that started it (choose one, send it, and follow the job here while the request runs), or
    the one its log lines (`long_job.started`) name. Operator staff only."""
    async with sessions() as session:
        found = await progress.read(session, job_id)
    if found is None:
        raise DomainError("job_not_found", f"no job {job_id}", status_code=404)
    return LongJobProgress(**found)


# ------------------------------------------------------------------ audit trail
audit_router = APIRouter(tags=["audit"])


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    channel: str
    actor: str
    roles: str
    actor_tenant: str
    action: str
    resource_type: str
    resource_id: str | None
    funder_id: str | None
    correlation_id: str | None


@audit_router.get("/audit", response_model=Page[AuditEntryPublic])
async def read_audit_trail(
    scope: Annotated[TenantScope, tenant_scope(Role.OPERATOR, *FUNDER_STAFF)],
    sessions: SessionsDep, page: PageDep,
) -> Page[AuditEntryPublic]:
    """This service's audit trail, oldest first: operator staff see all of it, funder staff their own funder's."""
    q = scope.restrict(select(AuditEntry), funder=AuditEntry.funder_id)
    async with sessions() as session:
        rows, cursor = await paginate(session, q, [AuditEntry.id], page)
        return Page(items=[AuditEntryPublic(**e.model_dump()) for e in rows], next_cursor=cursor)
