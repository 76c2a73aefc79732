"""What every service shares at run time: the FastAPI app with its lifespan (migrations, database,
bus, outbox relay, consumers), the correlation-id middleware, error bodies and health endpoints."""
from __future__ import annotations

import asyncio
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import select

from .audit import AuditEntry
from .auth import FUNDER_STAFF, Principal, Role, require
from .bus import Bus
from .consumer import Consumer, Handler
from .db import make_engine, ping, session_factory, upgrade_async
from .docs import install_docs
from .errors import DomainError
from .logging import bind_correlation, configure_logging, get_logger
from .outbox import OutboxRelay
from .settings import ServiceSettings

log = get_logger(__name__)
CORRELATION_HEADER = "X-Correlation-ID"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


@dataclass
class ServiceSpec:
    """What makes one service: its name, migrations, routes and the events it consumes."""

    name: str
    migrations_dir: Path
    routers: list[APIRouter]
    handlers: dict[str, Handler] = field(default_factory=dict)  # event type -> handler
    bind_keys: list[str] | None = None
    fallback: Handler | None = None
    title: str = ""
    description: str = ""
    version: str = "0.1.0"


class Runtime:
    """The running parts of one service instance."""

    def __init__(self, spec: ServiceSpec, settings: ServiceSettings):
        self.spec = spec
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        self.sessions: async_sessionmaker[AsyncSession] = session_factory(self.engine)
        self.bus = Bus(settings)
        self.relay = OutboxRelay(self.engine, self.bus, settings.relay_batch_size, settings.relay_idle_seconds)
        self.consumer: Consumer | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        if self.settings.migrate_on_start:
            await upgrade_async(self.spec.migrations_dir, self.settings.database_url)
        await self.bus.connect()
        if self.spec.handlers or self.spec.fallback:
            self.consumer = Consumer(
                self.bus, self.sessions, self.settings.queue_name, self.spec.handlers,
                bind_keys=self.spec.bind_keys, fallback=self.spec.fallback,
                prefetch=self.settings.consumer_prefetch, batch_size=self.settings.consumer_batch_size,
                delivery_limit=self.settings.delivery_limit, audit=True,
            )
            await self.consumer.start()
        self._tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        log.info("service.started", database=self.engine.dialect.name, queue=self.settings.queue_name)

    async def stop(self) -> None:
        self.relay.stop()
        if self.consumer:
            await self.consumer.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.close()
        await self.engine.dispose()


def error_response(status: int, reason: str, message: str, **details: Any) -> JSONResponse:
    err: dict[str, Any] = {"reason": reason, "message": message}
    if details:
        err["details"] = details
    return JSONResponse({"error": err}, status_code=status)


def create_service_app(spec: ServiceSpec, settings: ServiceSettings) -> FastAPI:
    configure_logging(settings.service_name, settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(spec, settings)
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title=spec.title or f"seteli {spec.name}", description=spec.description,
                  version=spec.version, lifespan=lifespan, docs_url=None, redoc_url=None)
    install_docs(app)  # Swagger UI served from this service (works offline)
    app.state.settings = settings

    @app.middleware("http")
    async def correlation(request: Request, call_next):  # noqa: ANN001, ANN202
        given = request.headers.get(CORRELATION_HEADER)
        cid = bind_correlation(given if given and _SAFE_ID.match(given) else None)
        response = await call_next(request)
        response.headers[CORRELATION_HEADER] = cid
        return response

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return error_response(422, "invalid_request", "the request does not match the API", errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict) and "reason" in exc.detail:
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        reason = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error")
        return JSONResponse({"error": {"reason": reason, "message": str(exc.detail)}},
                            status_code=exc.status_code, headers=exc.headers)

    app.include_router(health_router)
    app.include_router(audit_router)
    for router in spec.routers:
        app.include_router(router)
    return app


# ------------------------------------------------------------------ dependencies
def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.runtime.sessions


SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]

# ------------------------------------------------------------------ health
health_router = APIRouter(tags=["health"])


@health_router.get("/health/live")
async def live() -> dict:
    """The process is up."""
    return {"status": "ok"}


@health_router.get("/health/ready")
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """The service can do its work: its database answers and its broker connection is open."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(ping(runtime.engine), 2.0)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["database"] = f"failing: {type(exc).__name__}"
    checks["broker"] = "ok" if runtime.bus.is_connected else "failing: not connected"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


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


@audit_router.get("/audit", response_model=list[AuditEntryPublic])
async def read_audit_trail(
    principal: Annotated[Principal, require(Role.OPERATOR, *FUNDER_STAFF, scope="list")],
    sessions: SessionsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_id: Annotated[int, Query(ge=0)] = 0,
) -> list[AuditEntryPublic]:
    """This service's audit trail, oldest first: operator staff see all of it, funder staff their own funder's."""
    q = select(AuditEntry).where(AuditEntry.id > after_id).order_by(AuditEntry.id).limit(limit)
    if not principal.is_operator:
        q = q.where(AuditEntry.funder_id == principal.funder_id)
    async with sessions() as session:
        return [AuditEntryPublic(**e.model_dump()) for e in (await session.exec(q)).all()]
