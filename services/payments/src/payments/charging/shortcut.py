"""``POST /charges`` without FastAPI's routing and dependency resolution, for the requests that pass them.

A charge is the hot request of payments, and a quarter of its CPU went to FastAPI around the route (matching the
path through the included routers, solving five dependencies, validating the body through a ``TypeAdapter``).
``ChargeShortcut`` is pure ASGI middleware inside the request guard (which has already checked the target,
headers and body for personal data, the body's size and shape, and logs the request) that answers
``POST /charges`` itself when the request is an ordinary one, doing what the route's dependencies do:

- the body is JSON (``Content-Type: application/json``), and ``ChargeCreate`` takes it as FastAPI would give it
  (``json.loads``, then the model in Python mode);
- a bearer token that the app's verifier (``auth.verifier_of``: the same cache) accepts, with a role the route
  allows (``router.CHARGERS``);
- at most one ``Idempotency-Key`` of at most 200 characters (the header's rule), made into the kept form as the
  route's dependency makes it.

Then it calls the route's own code (``router.charge_request``); a refusal it raises is answered by the app's
exception handler for it, as the route's would be. Anything else (no or a bad token, a role not allowed, a body
that is not JSON or does not validate, another media type, dependency overrides) is passed on to the route
itself, body and all: it answers with the same errors as ever. ``scope["route"]`` is set to the route, so the
metrics and the request's log line name it as before; the OpenAPI document is the route's, unchanged."""
from __future__ import annotations

import inspect
import json

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from seteli_shared.auth import verifier_of

from .router import CHARGERS, charge_request, charge_voucher, router
from .schemas import MAX_IDEMPOTENCY_KEY, ChargeCreate, idempotency_key_of

PATH = "/charges"
_ROUTE = next(r for r in router.routes if getattr(r, "endpoint", None) is charge_voucher)
_ROLES = frozenset(CHARGERS)


class ChargeShortcut:
    """Pure ASGI middleware; see the module docstring. Add it inside ``RequestGuard`` (``install``)."""

    def __init__(self, app):  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        body, receive = await _body(receive)
        app = scope.get("app")
        ready = None if app is None or app.dependency_overrides else _ready(app, scope, body)
        if ready is None:
            await self.app(scope, receive, send)  # the route itself: the same answer as ever
            return
        principal, charge, key = ready
        scope["route"], scope["endpoint"], scope["path_params"] = _ROUTE, _ROUTE.endpoint, {}
        state = app.state
        started = [False]

        async def sending(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        try:
            response = await charge_request(state.runtime.sessions, state.clock, principal, charge, key)
        except Exception as exc:  # noqa: BLE001  (answered by the app's handler for it, as the route's would be)
            handler = _handler(app, exc)
            if handler is None or started[0]:
                raise
            request = Request(scope, receive)
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
        await response(scope, receive, sending)


async def _body(receive):  # noqa: ANN001, ANN202
    """The request's body, and a ``receive`` that gives it again (then the client's own messages)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            replay = [message]
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
            break
    body = b"".join(chunks)
    if replay[0]["type"] != "http.request" and chunks:  # a disconnect mid-body: give what came, then it
        replay.insert(0, {"type": "http.request", "body": body, "more_body": True})

    async def again():  # noqa: ANN202
        if replay:
            return replay.pop(0)
        return await receive()

    return body, again


def _header(scope, name: bytes) -> list[bytes]:  # noqa: ANN001
    return [v for k, v in scope["headers"] if k.lower() == name]


def _ready(app, scope, body: bytes):  # noqa: ANN001, ANN202
    """(principal, the charge, its Idempotency-Key or None) when the route's dependencies would all pass; else
    None (the route answers)."""
    media = _header(scope, b"content-type")
    if not body or len(media) != 1 or media[0].split(b";")[0].strip().lower() != b"application/json":
        return None
    authorization = _header(scope, b"authorization")
    if not authorization:
        return None
    scheme, _, token = authorization[0].decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    keys = _header(scope, b"idempotency-key")
    if len(keys) > 1:
        return None
    try:
        principal = verifier_of(app).verify(token)
    except Exception:  # noqa: BLE001  (the route answers the refusal)
        return None
    if not principal.roles & _ROLES:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    try:
        charge = ChargeCreate.model_validate(value)
    except ValidationError:
        return None
    key = None
    if keys:
        text = keys[0].decode("latin-1")
        if not text or len(text) > MAX_IDEMPOTENCY_KEY:
            return None
        key = idempotency_key_of(app, text)
    return principal, charge, key


def _handler(app, exc: Exception):  # noqa: ANN001, ANN202
    """The app's exception handler for ``exc``, found as Starlette finds it (a status code's first for an
    ``HTTPException``, then by the exception's classes)."""
    handlers = app.exception_handlers
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


def install(app) -> None:  # noqa: ANN001
    """Put the shortcut innermost of the app's middleware (inside the request guard), before the app starts."""
    from starlette.middleware import Middleware

    app.user_middleware.append(Middleware(ChargeShortcut))
