"""The HTTP edge every service shares: one guard in front of every route, one error body.

``RequestGuard`` (pure ASGI middleware) runs before any route, for every request:

- binds the correlation id: ``X-Correlation-ID`` must be a UUID (the contract; arbitrary header
  text is never stored, logged or echoed); without one, a new UUID is made;
- refuses a body over the size limit (413; a larger limit for the bulk routes a service names), and a JSON body
  deeper than 32 levels, with more than 100,000 values or a string over 32 KiB, or holding a number the API
  does not take (an exponent, NaN, Infinity, an integer beyond 64 bits, more digits with decimals than a
  double keeps): 422 with the reason, found on the bytes before anything parses (and recurses into) them;
- checks every string the request carries, in one place: the path, every query parameter, every header
  a service keeps or logs (``CHECKED_HEADERS``: ``Idempotency-Key``, the correlation and request ids,
  ``User-Agent``, ``Referer``, the forwarded-for headers), and every string (keys too) of the JSON body at
  any depth: a personal identity code in any spelling ``privacy`` knows (422 ``personal_identity_code``,
  ``details.errors[].loc`` naming the place, e.g. ``["header", "Idempotency-Key"]``, never the value) or a
  NUL character (422 ``nul_character``) stops the request before it reaches a route, a database or a log;
- logs each request once: method, path, status, milliseconds, correlation id.

A streamed body (a ``(path, media type)`` the service names in ``streamed_bodies``, e.g. a bulk CSV
file) is the exception: the guard passes it on as it arrives, only counting its bytes against the bulk
limit (413), and the route checks each line the way the guard checks a body (``payments.csv_charges``).

Every error answers ``{"error": {"reason", "message", "details"?}}``: unknown routes (404), wrong
methods (405), unparsable bodies (400), bad tokens (401), refusals (403/404/409/422/429), field errors
(422, all of one request together in ``details.errors``), and anything unexpected (500, no internal
detail). The OpenAPI documents describe these bodies and list the statuses each route can give.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Iterable
from urllib.parse import parse_qsl, unquote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .errors import DomainError
from .ids import new_id
from .logging import bind_correlation, get_logger
from .privacy import REASON as PERSONAL_IDENTITY_CODE
from .privacy import SIX_DIGITS_SPREAD, find_in
from .schemas import INT64_MAX, NUMBER_REASONS

log = get_logger("seteli.http")
CORRELATION_HEADER = "X-Correlation-ID"
_CORRELATION_KEY = CORRELATION_HEADER.lower().encode()

#: request headers some service keeps, logs or passes on, or may (by their usual spelling, for ``loc``): a
#: personal identity code in any of them is refused like one in the body. Authorization and cookies are never
#: kept, and random trace ids (``traceparent``: 32 hex digits, flagged about once in 5,000) are not read.
CHECKED_HEADERS = ("Idempotency-Key", CORRELATION_HEADER, "X-Request-ID", "User-Agent", "Referer", "Forwarded",
                   "X-Forwarded-For", "X-Real-IP")
_CHECKED_HEADER_NAMES = {name.lower().encode(): name for name in CHECKED_HEADERS}
#: the shape a JSON body may have, checked on its bytes before anything parses it: ``json.loads`` (and every
#: walk of the value) recurses once per level, and a body nested a few thousand deep would overflow the stack
JSON_MAX_DEPTH = 32
#: array elements and object members in one body (a bulk body of 10,000 lines of 7 fields has 80,000)
JSON_MAX_ITEMS = 100_000
#: the longest string (or key) of a body, in bytes as sent (escapes included); the longest text field is 2,000
#: characters
JSON_MAX_STRING_BYTES = 32 * 1024
#: digits a JSON number with a fraction may have in all: more than a binary double keeps exactly, so that the
#: value a route sees is the one written (a longer number can be sent as a string)
JSON_MAX_FRACTION_DIGITS = 15

MESSAGES = {
    PERSONAL_IDENTITY_CODE: "a personal identity code may not be sent to this service; "
                            "use the pseudonymous reference the funder issued",
    "nul_character": "text may not contain the NUL character",
    "control_character": "a path or query may not contain control characters",
    "json_too_deep": f"the JSON body is nested more than {JSON_MAX_DEPTH} levels deep",
    "json_too_many_items": f"the JSON body holds more than {JSON_MAX_ITEMS} values",
    "json_string_too_long": f"a string of the JSON body is longer than {JSON_MAX_STRING_BYTES} bytes",
    "invalid_number": "a number is written in plain digits with at most one decimal point: no exponent, NaN "
                      f"or Infinity, and at most {JSON_MAX_FRACTION_DIGITS} digits when it has decimals (send a "
                      "longer one as a string)",
    "number_out_of_range": f"a whole number may be at most {INT64_MAX} (64 bits)",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: an ASCII body without six digits this close (and without a backslash) skips the JSON walk
_SIX_DIGITS_SPREAD = re.compile(SIX_DIGITS_SPREAD)
# the JSON body taken apart with bytes methods (C loops, no regular expression over the whole body)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_NUMBER_CHARACTERS = bytes(c if chr(c) in "0123456789." else 32 for c in range(256))  # others to spaces
_TOO_MANY_OPEN = re.compile(rb"[\[{]{%d}" % (JSON_MAX_DEPTH + 1))
_INNERMOST = re.compile(rb"\[\]|\{\}")

REASONS = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
           405: "method_not_allowed", 409: "conflict", 413: "request_too_large", 415: "unsupported_media_type",
           422: "invalid_request", 429: "too_many_requests", 500: "internal_error", 503: "unavailable"}


# ------------------------------------------------------------------ the error body
class ErrorDetail(BaseModel):
    reason: str  # stable, machine-readable (e.g. "units_exceeded", "invalid_request")
    message: str  # for people; never echoes personal data
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """Every error of every service."""

    error: ErrorDetail


def error_response(status: int, reason: str, message: str, headers: dict[str, str] | None = None,
                   **details: Any) -> JSONResponse:
    err: dict[str, Any] = {"reason": reason, "message": message}
    if details:
        err["details"] = details
    return JSONResponse({"error": err}, status_code=status, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for e in exc.errors():
        # pydantic's messages name the rule, never the input; the input itself is never echoed
        out.append({"loc": [str(x) for x in e.get("loc", ())], "reason": e.get("type", "invalid"),
                    "message": e.get("msg", "")})
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        if any(e["reason"] == "json_invalid" for e in errors):
            return error_response(400, "malformed_json", "the body is not valid JSON")
        reasons = {e["reason"] for e in errors}
        if len(reasons) == 1 and reasons <= set(NUMBER_REASONS):  # one kind of bad number or date: say which
            (reason,) = reasons
            return error_response(422, reason, errors[0]["message"], errors=errors)
        return error_response(422, "invalid_request", "the request does not match the API", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict) and "reason" in exc.detail:
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        reason = REASONS.get(exc.status_code, "http_error")
        message = {404: "no such resource", 405: "this method is not allowed here"}.get(
            exc.status_code, reason.replace("_", " "))
        return error_response(exc.status_code, reason, message, headers=exc.headers)


# ------------------------------------------------------------------ the guard
def _valid_correlation_id(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError):
        return None


class RequestGuard:
    """Pure ASGI middleware; see the module docstring."""

    def __init__(self, app, *, max_body_bytes: int, max_bulk_body_bytes: int,  # noqa: ANN001
                 bulk_paths: Iterable[str] = (), streamed_bodies: Iterable[tuple[str, str]] = ()):
        self.app = app
        self.max_body = max_body_bytes
        self.max_bulk_body = max_bulk_body_bytes
        self.bulk_paths = tuple(bulk_paths)
        self.streamed = {(path, media.lower()) for path, media in streamed_bodies}

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_box = [0]
        path_checked = False
        headers = dict(scope.get("headers") or [])
        header_refusal = self._check_headers(scope.get("headers") or [])
        cid, refusal = self._correlation(None if header_refusal else headers.get(_CORRELATION_KEY))
        refusal = header_refusal or refusal
        bind_correlation(cid)

        async def send_with_id(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (_CORRELATION_KEY, cid.encode())]
            await send(message)

        try:
            if refusal is None:
                refusal = self._check_target(scope)
                path_checked = refusal is None
            body = b""
            if refusal is None and self._streamed(scope, headers):
                refusal = self._too_large_declared(headers, self.max_bulk_body)
                if refusal is None:
                    await self.app(scope, _counted(receive, self.max_bulk_body), send_with_id)
                    return
            if refusal is None:
                body, refusal = await self._read_body(scope, headers, receive)
            if refusal is None:
                refusal = self._check_json_shape(body)
            if refusal is None:
                refusal = self._check_body(body)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
                return
            await self.app(scope, _replay(body, receive), send_with_id)
        except ClientDisconnect:  # the client left mid-body: nobody to answer, nothing failed here
            log.info("http.client_disconnected")
            status_box[0] = status_box[0] or 499
        except Exception as exc:  # noqa: BLE001  (one body for every failure; no internals leak)
            log.error("http.unexpected_error", error_type=type(exc).__name__, exc_info=exc)
            if status_box[0] == 0:
                await error_response(500, "internal_error", "the service failed; quote the correlation id "
                                     f"{cid} when you report it")(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            # the raw path is logged only once the guard has found it clean
            path = getattr(route, "path", None) or (scope.get("path", "") if path_checked else "[not logged]")
            log.info("http.request", method=scope["method"], path=path, status=status_box[0],
                     ms=round((time.perf_counter() - started) * 1000, 2))

    @classmethod
    def _correlation(cls, raw: bytes | None) -> tuple[str, JSONResponse | None]:
        if raw is None:
            return new_id(), None
        cid = _valid_correlation_id(raw.decode("latin-1"))
        if cid is None:
            return new_id(), error_response(
                400, "invalid_correlation_id", f"{CORRELATION_HEADER} must be a UUID (or left out)")
        found = find_in(cid)  # as it is kept: 32 hex digits get their dashes, and a code can appear
        if found:
            return new_id(), cls._refusal(["header", CORRELATION_HEADER], found[1])
        return cid, None

    @classmethod
    def _check_headers(cls, raw_headers: Iterable[tuple[bytes, bytes]]) -> JSONResponse | None:
        """A personal identity code in a header some service keeps or logs (``CHECKED_HEADERS``): 422
        naming the header, never its value."""
        for key, value in raw_headers:
            name = _CHECKED_HEADER_NAMES.get(key.lower())
            if name is None:
                continue
            texts = [value.decode("latin-1")]
            if not value.isascii():  # UTF-8 (full-width digits...) as well as Latin-1 (superscripts)
                texts.append(value.decode("utf-8", "replace"))
            found = find_in(texts)
            if found:
                return cls._refusal(["header", name], found[1])
        return None

    @staticmethod
    def _refusal(where: list, reason: str) -> JSONResponse:
        return error_response(422, reason, MESSAGES[reason], errors=[{"loc": where, "reason": reason,
                                                                     "message": MESSAGES[reason]}])

    def _check_target(self, scope) -> JSONResponse | None:  # noqa: ANN001
        path = scope.get("path", "")
        found = find_in([path, unquote(path)])  # and what a second decoding (``%2531``) would make of it
        if found:
            return self._refusal(["path"], found[1])
        if _CONTROL.search(path):  # never a legitimate id; it could end up in a header
            return self._refusal(["path"], "control_character")
        raw_query = scope.get("query_string", b"").decode("latin-1")
        if raw_query:
            try:
                pairs = parse_qsl(raw_query, keep_blank_values=True, encoding="utf-8", errors="strict")
            except (UnicodeDecodeError, ValueError):
                return error_response(400, "malformed_query", "the query string is not valid UTF-8")
            for name, value in pairs:
                if _CONTROL.search(name) or _CONTROL.search(value):
                    if "\x00" not in name + value:
                        return self._refusal(["query"], "control_character")
                found = find_in(value)
                if found:
                    return self._refusal(["query", name] if not find_in(name) else ["query"], found[1])
                found = find_in(name)
                if found:
                    return self._refusal(["query"], found[1])
            found = find_in(unquote(raw_query))  # a raw "+" is a century sign, not a space
            if found:
                return self._refusal(["query"], found[1])
        return None

    def _streamed(self, scope, headers: dict) -> bool:  # noqa: ANN001
        if not self.streamed or scope["method"] != "POST":
            return False
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
        return (scope.get("path", ""), media) in self.streamed

    @staticmethod
    def _too_large_declared(headers: dict, limit: int) -> JSONResponse | None:
        declared = headers.get(b"content-length")
        if declared is None:
            return None
        try:
            too_large = int(declared) > limit
        except ValueError:
            return error_response(400, "bad_request", "Content-Length is not a number")
        return RequestGuard._too_large(limit) if too_large else None

    @staticmethod
    def _too_large(limit: int) -> JSONResponse:
        return error_response(413, "request_too_large", f"the body may be at most {limit} bytes", limit_bytes=limit)

    async def _read_body(self, scope, headers: dict, receive) -> tuple[bytes, JSONResponse | None]:  # noqa: ANN001
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") and b"content-length" not in headers \
                and b"transfer-encoding" not in headers:
            return b"", None
        path = scope.get("path", "")
        limit = self.max_bulk_body if any(path.startswith(p) for p in self.bulk_paths) else self.max_body
        refusal = self._too_large_declared(headers, limit)
        if refusal is not None:
            return b"", refusal
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", self._too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), None

    def _check_json_shape(self, body: bytes) -> JSONResponse | None:
        """Refuse a JSON body (one that opens with ``[`` or ``{``) that is too deep, has too many items or too
        long a string, or holds a number the API does not take (an exponent, NaN, Infinity, an integer beyond 64
        bits, more digits with decimals than a double keeps), before anything parses it. All of it on the bytes
        with bytes methods (C loops): no recursion, no regular expression over the whole body."""
        head = body.lstrip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")  # (the parser skips a BOM)
        if head[:1] not in (b"{", b"["):
            return None
        if body.count(b'"') > 4 * JSON_MAX_ITEMS:  # each item is at most a key and a value
            return self._refusal(["body"], "json_too_many_items")
        # without its escaped backslashes and quotes, a JSON text's quotes alternate: in, out of a string
        parts = body.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')
        if len(parts) > 1 and max(map(len, parts[1::2])) > JSON_MAX_STRING_BYTES:
            return self._refusal(["body"], "json_string_too_long")
        outside = b"".join(parts[0::2]) if len(parts) > 1 else body  # structure, numbers, true, false, null
        brackets = outside.translate(None, _NOT_BRACKETS)
        if outside.count(b",") + brackets.count(b"[") + brackets.count(b"{") > JSON_MAX_ITEMS:
            return self._refusal(["body"], "json_too_many_items")
        if _json_depth_over(brackets, JSON_MAX_DEPTH):  # at most 2 * JSON_MAX_ITEMS brackets by now
            return self._refusal(["body"], "json_too_deep")
        return _number_refusal(outside)

    def _check_body(self, body: bytes) -> JSONResponse | None:
        if not body:
            return None
        if body.isascii() and b"\x00" not in body and b"\\" not in body and not _SIX_DIGITS_SPREAD.search(body):
            return None  # the fast path: no NUL, no escape, no digits that could make a code
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # a file saved as Latin-1 / Windows-1252 (spreadsheets do): say so, never echo it
            return error_response(400, "encoding_not_utf8", "the body is not UTF-8 text: save it as UTF-8 "
                                  "(e.g. \"CSV UTF-8\") and send it again")
        try:
            value = json.loads(text)
        except ValueError:
            value = text  # not JSON: the route will refuse it; its raw text is still checked here
        found = find_in(value)
        if found:
            loc, reason = found
            return self._refusal(["body", *[str(x) for x in loc]], reason)
        return None


def _number_refusal(outside: bytes) -> JSONResponse | None:
    """The refusal of the first number outside the strings that the API does not take, if any."""
    lower_e = outside.count(b"e")
    if (b"E" in outside or b"N" in outside or b"I" in outside  # 1E5, NaN, Infinity
            or lower_e != outside.count(b"true") + outside.count(b"false")):  # 1e5 (the e of true and false aside)
        return RequestGuard._refusal(["body"], "invalid_number")
    tokens = outside.translate(_NUMBER_CHARACTERS).split()
    if not tokens or max(map(len, tokens)) <= JSON_MAX_FRACTION_DIGITS:
        return None
    for token in tokens:
        if len(token) <= JSON_MAX_FRACTION_DIGITS:
            continue
        if b"." in token:
            if len(token) - token.count(b".") > JSON_MAX_FRACTION_DIGITS:
                return RequestGuard._refusal(["body"], "invalid_number")
        elif len(token) > len(str(INT64_MAX)) or int(token) > INT64_MAX:  # (never int() of thousands of digits)
            return RequestGuard._refusal(["body"], "number_out_of_range")
    return None


def _json_depth_over(brackets: bytes, limit: int) -> bool:
    """Whether the brackets (``[]{}`` of a body, nothing else) nest deeper than ``limit``: each pass removes
    the innermost empty pairs, so ``limit`` passes empty any nesting of that depth. Brackets that do not pair
    up (not JSON: the parser refuses it) count by their opening ones."""
    if _TOO_MANY_OPEN.search(brackets):
        return True
    for _ in range(limit):
        if not brackets:
            return False
        shorter = _INNERMOST.sub(b"", brackets)
        if len(shorter) == len(brackets):  # nothing pairs up any more
            return brackets.count(b"[") + brackets.count(b"{") > limit
        brackets = shorter
    return bool(brackets)


def _counted(client_receive, limit: int):  # noqa: ANN001, ANN202
    """The client's messages, refusing a body (413) once more than ``limit`` bytes of it have come."""
    size = 0

    async def receive():  # noqa: ANN202
        nonlocal size
        message = await client_receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise DomainError("request_too_large", f"the body may be at most {limit} bytes", status_code=413,
                                  limit_bytes=limit)
        return message

    return receive


def _replay(body: bytes, client_receive):  # noqa: ANN001, ANN202
    sent = False

    async def receive():  # noqa: ANN202
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        # then wait for the client's real disconnect: a streamed or file response (e.g. the docs'
        # assets) listens for it while it sends, and an immediate disconnect would cut it off empty
        while True:
            message = await client_receive()
            if message["type"] == "http.disconnect":
                return message

    return receive


# ------------------------------------------------------------------ the documents
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can give these error statuses (besides the ones every route
    documents by itself)."""
    return {s: {"model": ErrorBody, "description": REASONS.get(s, "error").replace("_", " ")} for s in statuses}


def install_openapi(app: FastAPI) -> None:
    """Describe the real error bodies: every operation lists the errors it can give, with ErrorBody."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in components["ErrorBody"].pop("$defs", {}).items():
            components[name] = sub
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        ref = {"$ref": "#/components/schemas/ErrorBody"}
        for path, item in schema.get("paths", {}).items():
            for method, op in item.items():
                responses = op.setdefault("responses", {})
                statuses = {"500"}
                has_body = "requestBody" in op
                if op.get("security"):
                    statuses |= {"401", "403"}
                if "{" in path:
                    statuses.add("404")
                if has_body:
                    statuses |= {"400", "413"}
                # 400: a bad correlation id, query or cursor; 422: personal data (body, path, query, headers)
                # or NUL anywhere
                statuses |= {"400", "422"}
                statuses |= {s for s in responses if s[0] in "45" and "content" not in responses[s]}
                for status in sorted(statuses):
                    entry = responses.setdefault(status, {"description": REASONS.get(int(status), "error")
                                                          .replace("_", " ")})
                    entry["content"] = {"application/json": {"schema": ref}}
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]



def created_or_repeated(model: type[BaseModel], *errors: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for an idempotent create: 201 the first time, 200 with the same answer when
    the same request comes again, plus the given error statuses."""
    return {200: {"model": model, "description": "the same request again: the earlier answer"},
            **error_responses(*errors)}
