"""The portal's app: pages, static assets (all served here: no CDN), sessions kept on the server
(``sessions.py``: the cookie holds only an opaque id), security headers, one JSON log line per request,
and HTML error pages."""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from seteli_shared.auth import TokenVerifier
from seteli_shared.clock import SYSTEM_CLOCK
from seteli_shared.db import ping, upgrade_async
from seteli_shared.ids import new_id
from seteli_shared.logging import get_logger
from seteli_shared.metrics import install_metrics

from . import client, provider, public, signin, staff
from .backend import Backend
from .sessions import ServerSessions, SessionStore
from .settings import PortalSettings
from .web import HERE, PERSONAL_DATA, Page, PageRefusal, address_carries_personal_data, refusal_page

log = get_logger("portal")
MIGRATIONS = Path(__file__).parent / "migrations"

SECURITY_HEADERS = {
    # every asset is the portal's own: no CDN, no inline script
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_app(settings: PortalSettings | None = None, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    settings = settings or PortalSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await upgrade_async(MIGRATIONS, settings.database_url)
        purge = asyncio.create_task(store.purge_every(settings.session_purge_seconds), name="session-purge")
        try:
            yield
        finally:
            purge.cancel()
            await asyncio.gather(purge, return_exceptions=True)
            await app.state.backend.close()
            await store.close()

    app = FastAPI(title="seteli portal", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.backend = Backend(settings, transport=transport)
    app.state.verifier = TokenVerifier(settings.token_settings())
    #: the sessions (a test moves their clock: ``app.state.sessions.clock``)
    app.state.sessions = store = SessionStore(settings, SYSTEM_CLOCK)
    app.add_middleware(ServerSessions, store=store)  # inside the log and headers below

    @app.middleware("http")
    async def headers_and_log(request: Request, call_next):  # noqa: ANN001, ANN202
        started = time.perf_counter()
        correlation = new_id()
        refused = address_carries_personal_data(request)
        try:
            if refused:  # before any page could show it again (a re-filled form, a next address)
                response = refusal_page(request, PageRefusal(422, PERSONAL_DATA))
            else:
                response = await call_next(request)
        except Exception:  # noqa: BLE001  (an unexpected failure is a page, never a traceback)
            log.exception("portal.failed", path=request.url.path, correlation_id=correlation)
            response = Response("<!doctype html><title>Error</title><p>Error / Virhe / Fel: " + correlation,
                                status_code=500, media_type="text/html")
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        if request.url.path.startswith(("/client", "/provider", "/funder", "/operator", "/signin")):
            response.headers.setdefault("Cache-Control", "no-store")
        # the path only (a query string may carry what a person typed), and not even that when it holds a code
        log.info("http.request", method=request.method, path="[not logged]" if refused else request.url.path,
                 status=response.status_code,
                 ms=round((time.perf_counter() - started) * 1000, 1), correlation_id=correlation)
        return response

    install_metrics(app, "portal")  # outermost: counts every page by its route template; serves /metrics

    @app.exception_handler(PageRefusal)
    async def refused(request: Request, exc: PageRefusal) -> Response:
        return refusal_page(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        page = Page(request)
        key = "page_not_found" if exc.status_code in (404, 405) else "error"
        return page.render("error.html", status=exc.status_code, message=page.t(key))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        page = Page(request)
        return page.render("error.html", status=422, message=page.t("error"))

    @app.get("/health/live", include_in_schema=False)
    async def live() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/health/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        """Ready when its session store answers (the services have their own readiness)."""
        try:
            await ping(store.engine)
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"status": "unavailable", "reason": f"session store: {type(exc).__name__}"},
                                status_code=503)
        return JSONResponse({"status": "ok"})

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (public, signin, client, provider, staff):
        app.include_router(module.router)
    return app
