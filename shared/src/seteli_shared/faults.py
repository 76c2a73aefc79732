"""Faults answered honestly: a database that is down or does not answer in time is a 503 the caller may
retry, never a 500 that says the service is broken.

``database_fault(exc)`` tells a database outage from a bug. It looks through the exception and what
caused it for the driver's and the pool's signs of one:

- ``unreachable``: no connection could be made (refused, reset, no answer to the connect in time);
- ``connection_lost``: the connection broke in use (the server closed it, the network dropped it);
- ``timed_out``: a statement got no answer within ``DB_STATEMENT_TIMEOUT_SECONDS`` (a stalled server or
  network, or a statement the server cancelled), or no pooled connection came free in time;
- ``unavailable``: the server refused new work (starting up, shutting down, too many connections).

Anything else (a constraint, a bad statement) is not an outage and stays a 500.

``install_fault_handlers(app)`` answers every route's database outage the same way: 503
``database_unavailable`` with ``Retry-After`` and the cause, logged once as ``http.database_unavailable``
(the cause, never a statement or a value). Readiness (``service.ready``) names the same causes.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .logging import get_logger

log = get_logger("seteli.http")

UNREACHABLE, CONNECTION_LOST, TIMED_OUT, UNAVAILABLE = "unreachable", "connection_lost", "timed_out", "unavailable"
#: the modules whose OSErrors and timeouts are the database's (a timeout elsewhere is someone else's)
_DRIVER_MODULES = ("asyncpg", "sqlalchemy", "seteli_shared.db")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _raised_by_driver(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False


def _cause_of(exc: BaseException) -> str | None:
    import asyncpg
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.TimeoutError):  # the pool: no connection came free in time
        return TIMED_OUT
    if isinstance(exc, asyncpg.exceptions.QueryCanceledError):  # a statement timeout on the server
        return TIMED_OUT
    if isinstance(exc, (asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.TooManyConnectionsError,
                        asyncpg.exceptions.OperatorInterventionError)):
        return UNAVAILABLE
    if isinstance(exc, asyncpg.PostgresConnectionError):
        return CONNECTION_LOST
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
        return CONNECTION_LOST
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return CONNECTION_LOST
    if isinstance(exc, OSError) and _raised_by_driver(exc):  # TimeoutError and ConnectionError are OSErrors
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            return TIMED_OUT
        if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
            return UNREACHABLE
        return CONNECTION_LOST
    return None


def database_fault(exc: BaseException) -> str | None:
    """The cause (``unreachable``, ``connection_lost``, ``timed_out``, ``unavailable``) when ``exc`` says the
    database could not be used, else None."""
    for cause in _causes(exc):
        found = _cause_of(cause)
        if found is not None:
            return found
    return None


def database_unavailable(cause: str, retry_after_seconds: int) -> JSONResponse:
    return JSONResponse(
        {"error": {"reason": "database_unavailable",
                   "message": "the service cannot use its database just now: try again shortly",
                   "details": {"cause": cause, "retry_after_seconds": retry_after_seconds}}},
        status_code=503, headers={"Retry-After": str(retry_after_seconds)})


def install_fault_handlers(app: FastAPI, retry_after_seconds: int) -> None:
    """503 ``database_unavailable`` with ``Retry-After`` for a database outage in any route; any other
    exception of these kinds goes on to the request guard (a 500)."""
    from asyncpg import InterfaceError, PostgresError
    from sqlalchemy.exc import SQLAlchemyError

    async def fault(_request: Request, exc: Exception) -> JSONResponse:
        cause = database_fault(exc)
        if cause is None:
            raise exc
        log.warning("http.database_unavailable", cause=cause, error_type=type(exc).__name__)
        return database_unavailable(cause, retry_after_seconds)

    for kind in (SQLAlchemyError, PostgresError, InterfaceError, OSError):
        app.add_exception_handler(kind, fault)


def document_outages(schema: dict) -> None:
    """List the 503 (with ``Retry-After``) in an OpenAPI document, for every operation but the health checks
    (the readiness check documents its own): one response in the components, referred to by each."""
    schema.setdefault("components", {}).setdefault("responses", {})["DatabaseUnavailable"] = {
        "description": "the database cannot be used just now (`database_unavailable`, with its `cause`): try again "
                       "after `Retry-After` seconds",
        "headers": {"Retry-After": {"description": "seconds to wait before trying again",
                                    "schema": {"type": "integer"}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for path, item in schema.get("paths", {}).items():
        if path.startswith("/health/"):
            continue
        for op in item.values():
            op.setdefault("responses", {}).setdefault("503", {"$ref": "#/components/responses/DatabaseUnavailable"})
