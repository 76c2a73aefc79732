"""The HTTP edge every service shares (``seteli_shared.web``): the request guard and the error body.

A small service built with the same factory as the real ones, on SQLite and the real RabbitMQ.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, Request
from pydantic import Field

from seteli_shared.auth import Role, mint, require
from seteli_shared.ids import new_id
from seteli_shared.schemas import RequestModel, Text
from seteli_shared.service import ServiceSpec, create_service_app
from seteli_shared.settings import ServiceSettings
from seteli_shared.testing import delete_namespace

router = APIRouter()
STORED: list[dict] = []
HETU_VARIANTS = [
    "131052-308T", "131052-308t", "010101A123N", "010101a123n", "010101Y123N", "010101x123n", "010101W123N",
    "010101V123N", "010101U123N", "010101B123N", "010101C123N", "010101D123N", "010101E123N", "010101F123N",
    "131052\u2010308T", "131052\u2013308T", "131052\u2212308T", "131052 - 308T", "ref 131052-308T x",
    "asiakas:131052\u00a0-\u00a0308T.", "\uff11\uff13\uff11\uff10\uff15\uff12-308T", "131052\u200b-308T",
    # the issue's: a space or no-break space instead of the sign, glued to letters, no century sign
    "131052 308T", "131052\u00a0308T", "x131052-308Ty", "131052308T", "HETU131052308T", "010101a123n",
]
#: every request header some service keeps or logs, and a code written in it (ASCII: headers are Latin-1)
HEADER_CODES = ["131052-308T", "131052 308T", "x131052-308Ty", "131052308T", "010101A123N", "ref 010101y123n"]


class Thing(RequestModel):
    name: Text
    count: int = Field(ge=0)
    tags: list[str] = []
    meta: dict[str, str] = {}


@router.post("/things", status_code=201)
async def make_thing(body: Thing, _p=require(Role.OPERATOR)) -> dict:  # noqa: ANN001
    STORED.append(body.model_dump())
    return body.model_dump()


@router.get("/things/{thing_id}")
async def read_thing(thing_id: str, q: str | None = None, _p=require(Role.OPERATOR)) -> dict:  # noqa: ANN001
    return {"id": thing_id, "q": q}


@router.post("/bulk/things", status_code=202)
async def bulk(body: list[Thing], _p=require(Role.OPERATOR)) -> dict:  # noqa: ANN001
    return {"accepted": len(body)}


@router.post("/bulk/lines")
async def streamed(request: Request, _p=require(Role.OPERATOR)) -> dict:  # noqa: ANN001
    """A streamed body (``streamed_bodies``): the chunks as they came."""
    sizes = [len(chunk) async for chunk in request.stream() if chunk]
    return {"chunks": len(sizes), "bytes": sum(sizes)}


@router.get("/crash")
async def crash() -> dict:
    raise RuntimeError("SELECT secret FROM internals")


def _migrations() -> Path:
    import registry.app  # any service's schema will do: the edge needs the outbox and audit tables

    return registry.app.SPEC.migrations_dir


SPEC = ServiceSpec(name="edge", migrations_dir=_migrations(), routers=[router],
                   bulk_paths=("/bulk/",), streamed_bodies=(("/bulk/lines", "text/csv"),))
OP = {"Authorization": f"Bearer {mint('edge-test', ['operator'])}"}


@pytest.fixture(scope="module")
async def client(tmp_path_factory, amqp_url):  # noqa: ANN001
    ns = f"edge{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(service_name="edge", environment="test", bus_namespace=ns, amqp_url=amqp_url,
                               database_url=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('edge')}/edge.db")
    app = create_service_app(SPEC, settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                     base_url="http://edge") as c:
            yield c
    await delete_namespace(amqp_url, ns, [f"{ns}.edge"])


def _is_error(r: httpx.Response, status: int, reason: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["reason"] == reason, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("hetu", HETU_VARIANTS)
async def test_a_personal_identity_code_in_any_string_of_the_body_is_refused(client, hetu, capsys):  # noqa: ANN001
    STORED.clear()
    for body in ({"name": hetu, "count": 1}, {"name": "ok", "count": 1, "tags": ["a", hetu]},
                 {"name": "ok", "count": 1, "meta": {"k": hetu}}, {"name": "ok", "count": 1, "meta": {hetu: "v"}}):
        err = _is_error(await client.post("/things", json=body, headers=OP), 422, "personal_identity_code")
        assert hetu not in json.dumps(err, ensure_ascii=False)
    assert STORED == []
    assert hetu.split()[0][:6] not in capsys.readouterr().out


@pytest.mark.parametrize("hetu", ["131052-308T", "010101a123n", "131052+308T"])
async def test_a_personal_identity_code_in_the_path_or_query_is_refused_and_not_logged(client, hetu, capsys):  # noqa: ANN001
    capsys.readouterr()
    _is_error(await client.get(f"/things/{hetu}", headers=OP), 422, "personal_identity_code")
    _is_error(await client.get("/things/x", params={"q": hetu}, headers=OP), 422, "personal_identity_code")
    _is_error(await client.get(f"/things/x?q={hetu}", headers=OP), 422, "personal_identity_code")
    out = capsys.readouterr().out
    assert '"path": "[not logged]"' in out and hetu[:6] not in out


async def test_correlation_ids_are_uuids_and_other_header_text_is_never_echoed(client, capsys):  # noqa: ANN001
    cid = new_id()  # (a raw uuid4 carries a code about once in 27,000)
    r = await client.get("/things/x", headers={**OP, "X-Correlation-ID": cid})
    assert r.status_code == 200 and r.headers["X-Correlation-ID"] == cid
    assert f'"correlation_id": "{cid}"' in capsys.readouterr().out
    for bad in ("my-trace-1", "x" * 200):
        r = await client.get("/things/x", headers={**OP, "X-Correlation-ID": bad})
        _is_error(r, 400, "invalid_correlation_id")
        assert r.headers["X-Correlation-ID"] != bad
        assert bad not in capsys.readouterr().out
    r = await client.get("/things/x", headers=OP)
    assert uuid.UUID(r.headers["X-Correlation-ID"])


def _uuid_holding_a_code() -> str:
    """A valid UUID with a personal identity code in it (six digits, the dash as century sign, three digits and a
    check character that is a hex digit): the guard refuses it although it is a UUID."""
    from seteli_shared.privacy import CHECK_CHARACTERS
    for n in range(1000):
        ddmmyy, number = "131052", f"{n:03d}"
        check = CHECK_CHARACTERS[int(ddmmyy + number) % 31]
        if check in "0123456789ABCDEF":
            return str(uuid.UUID(f"00{ddmmyy}-{number}{check.lower()}-4000-8000-000000000000"))
    raise AssertionError("no such code")


@pytest.mark.parametrize("header", ["Idempotency-Key", "X-Correlation-ID", "X-Request-ID", "User-Agent", "Referer",
                                    "Forwarded", "X-Forwarded-For", "X-Real-IP"])
async def test_a_personal_identity_code_in_a_header_a_service_keeps_or_logs_is_refused(
        client, header, capsys):  # noqa: ANN001
    """422 ``personal_identity_code`` naming the header, never its value; nothing stored, the value logged nowhere."""
    STORED.clear()
    capsys.readouterr()
    # a UUID can hold a code too; sent as 32 hex digits, it holds one only once its dashes are put in
    uuids = [_uuid_holding_a_code(), uuid.UUID(_uuid_holding_a_code()).hex]
    for code in [*HEADER_CODES, *(uuids if header == "X-Correlation-ID" else [])]:
        for method, url, body in (("GET", "/things/x", None), ("POST", "/things", {"name": "ok", "count": 1})):
            r = await client.request(method, url, json=body, headers={**OP, header: code})
            err = _is_error(r, 422, "personal_identity_code")
            assert err["details"]["errors"] == [{"loc": ["header", header], "reason": "personal_identity_code",
                                                 "message": err["message"]}]
            assert code not in r.text and r.headers["X-Correlation-ID"] != code
    out = capsys.readouterr().out
    assert STORED == [] and not any(code in out for code in HEADER_CODES)
    assert "131052" not in out and "010101" not in out


async def test_ordinary_header_values_pass(client):  # noqa: ANN001
    headers = {**OP, "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0.6478.126 Safari/537.36",
               "X-Forwarded-For": "203.0.113.195, 2001:db8:85a3::8a2e:370:7334", "Idempotency-Key": new_id(),
               "Referer": "https://portaali.example.fi/provider/charges?page=2", "X-Request-ID": "req-20260113-0001",
               "Forwarded": "for=192.0.2.60;proto=https;by=203.0.113.43", "X-Real-IP": "192.0.2.60"}
    r = await client.post("/things", json={"name": "ok", "count": 1}, headers=headers)
    assert r.status_code == 201, r.text


async def test_nul_characters_anywhere_are_a_422(client):  # noqa: ANN001
    _is_error(await client.post("/things", json={"name": "a\x00b", "count": 1}, headers=OP), 422, "nul_character")
    _is_error(await client.post("/things", json={"name": "a", "count": 1, "meta": {"k\x00": "v"}}, headers=OP),
              422, "nul_character")
    _is_error(await client.get("/things/a%00b", headers=OP), 422, "nul_character")
    _is_error(await client.get("/things/a", params={"q": "x\x00"}, headers=OP), 422, "nul_character")


async def test_bodies_over_the_limit_are_413_and_bulk_routes_have_a_larger_limit(client):  # noqa: ANN001
    big = {"name": "x", "count": 1, "tags": ["y" * 1000] * 100}  # ~100 kB
    err = _is_error(await client.post("/things", json=big, headers=OP), 413, "request_too_large")
    assert err["details"]["limit_bytes"] == 64 * 1024
    ten_mb = b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'", "count": 1}'
    _is_error(await client.post("/things", content=ten_mb, headers={**OP, "content-type": "application/json"}),
              413, "request_too_large")

    async def chunks():  # noqa: ANN202  (no Content-Length: the guard counts as it reads)
        for _ in range(100):
            yield b" " * 1024

    _is_error(await client.post("/things", content=chunks(), headers={**OP, "content-type": "application/json"}),
              413, "request_too_large")
    r = await client.post("/bulk/things", json=[big] * 3, headers=OP)
    assert r.status_code == 202 and r.json() == {"accepted": 3}


async def test_a_streamed_body_reaches_its_route_as_it_arrives_within_the_bulk_limit(client):  # noqa: ANN001
    csv = {**OP, "content-type": "text/csv"}

    async def chunks(n: int, size: int = 1024 * 1024):  # noqa: ANN202
        for _ in range(n):
            yield b"a;b\n" * (size // 4)

    r = await client.post("/bulk/lines", content=chunks(3), headers=csv)
    assert r.json() == {"chunks": 3, "bytes": 3 * 1024 * 1024}, "passed on chunk by chunk, not gathered"
    # over the bulk limit: refused as soon as the count passes it, or at once when the length says so
    _is_error(await client.post("/bulk/lines", content=chunks(17), headers=csv), 413, "request_too_large")
    _is_error(await client.post("/bulk/lines", content=b"a" * (17 * 1024 * 1024), headers=csv),
              413, "request_too_large")
    # another media type to the same path is read and checked whole by the guard, as any body
    err = _is_error(await client.post("/bulk/lines", json={"x": "131052-308T"}, headers=OP),
                    422, "personal_identity_code")
    assert "131052" not in json.dumps(err)


async def test_a_client_that_goes_away_mid_upload_is_no_service_failure(client, capsys):  # noqa: ANN001
    """The connection drops in the middle of a streamed body: logged as the client's leaving (status 499 in
    the request log), not as an unexpected error, and no answer is attempted."""
    app = client._transport.app
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/bulk/lines", "raw_path": b"/bulk/lines", "query_string": b"", "root_path": "",
             "server": ("edge", 80), "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"edge"), (b"content-type", b"text/csv"),
                         (b"authorization", OP["Authorization"].encode()), (b"transfer-encoding", b"chunked")]}
    incoming = [{"type": "http.request", "body": b"a;b\n" * 1000, "more_body": True}, {"type": "http.disconnect"}]
    sent = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    capsys.readouterr()
    await app(scope, receive, send)
    out = capsys.readouterr().out
    assert sent == [] and "http.client_disconnected" in out and "unexpected_error" not in out
    assert "status=499" in out or '"status": 499' in out


async def test_every_error_has_the_one_envelope_and_leaks_nothing(client):  # noqa: ANN001
    _is_error(await client.get("/no/such/route"), 404, "not_found")
    _is_error(await client.delete("/things", headers=OP), 405, "method_not_allowed")
    err = _is_error(await client.post("/things", content=b'{"name": "x", ', headers={**OP, "content-type":
                                                                                     "application/json"}),
                    400, "malformed_json")
    assert "Expecting" not in err["message"] and "details" not in err
    _is_error(await client.post("/things", json={"name": "x", "count": 1}), 401, "unauthenticated")
    _is_error(await client.post("/things", json={"name": "x", "count": 1},
                                headers={"Authorization": "Bearer not.a.token"}), 401, "unauthenticated")
    err = _is_error(await client.get("/crash"), 500, "internal_error")
    assert "SELECT" not in json.dumps(err)


async def test_all_field_errors_come_together_unknown_fields_are_refused_and_text_is_stripped(client):  # noqa: ANN001
    err = _is_error(await client.post("/things", json={"name": "   ", "count": -1, "colour": "red"}, headers=OP),
                    422, "invalid_request")
    by_field = {e["loc"][-1]: e["reason"] for e in err["details"]["errors"]}
    assert by_field == {"name": "string_too_short", "count": "greater_than_equal", "colour": "extra_forbidden"}
    r = await client.post("/things", json={"name": "  Kotihoiva  ", "count": 0}, headers=OP)
    assert r.status_code == 201 and r.json()["name"] == "Kotihoiva"


async def test_tokens_with_malformed_claims_are_401_not_500(client):  # noqa: ANN001
    for claims in ({"funder_id": ["091"]}, {"funder_id": 91}, {"funder_id": {"a": 1}}):
        token = mint("x", ["funder_finance"], **claims)
        _is_error(await client.get("/things/x", headers={"Authorization": f"Bearer {token}"}), 401,
                  "unauthenticated")


async def test_the_openapi_document_describes_the_error_bodies(client):  # noqa: ANN001
    doc = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in json.dumps(doc)
    post = doc["paths"]["/things"]["post"]["responses"]
    for status in ("400", "401", "403", "413", "422", "500"):
        assert post[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "404" in doc["paths"]["/things/{thing_id}"]["get"]["responses"]


def test_every_century_sign_is_known():
    from seteli_shared.privacy import CENTURY

    assert set(CENTURY) == set("+-ABCDEFYXWVU")


def test_ordinary_references_are_not_taken_for_identity_codes():
    from seteli_shared.privacy import contains_personal_identity_code

    for text in ("HKI-1", "2617416-4", "FI2112345600000785", "131052-308U", "visit-0001", "D-1a2b3c4d5e6f",
                 "2026-11-25", "c-12345678", str(uuid.UUID(int=131052308)), "+358401234567", "FI21 1234 5600 0007 85",
                 "040 123 4567"):
        assert not contains_personal_identity_code(text), text


async def test_control_characters_in_a_path_or_query_are_a_422(client):  # noqa: ANN001
    _is_error(await client.get("/things/a%0Db", headers=OP), 422, "control_character")
    _is_error(await client.get("/things/a", params={"q": "x\ny"}, headers=OP), 422, "control_character")
    r = await client.post("/things", json={"name": "two\nlines", "count": 1}, headers=OP)
    assert r.status_code == 201, "a body's text may have line breaks"
