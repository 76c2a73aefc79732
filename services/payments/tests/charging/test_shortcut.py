"""``POST /charges`` answered by ``shortcut.ChargeShortcut`` (without FastAPI's dependency resolution) answers
exactly what the FastAPI route answers: the same status, body and headers for new charges, retries, refusals
of the rules, of the caller and of the request, with and without an Idempotency-Key. Each request goes once
through the shortcut and once through the route (an app with dependency overrides is always answered by the
route), on the live app (conftest.py)."""
from __future__ import annotations

import json

import pytest

from payments.charging import shortcut
from seteli_shared.auth import mint

from ..conftest import TODAY, charger

P = "prov-short"


class _Unused:
    """A dependency override for nothing the app uses: it only sends every request to the route."""


@pytest.fixture
def counted(monkeypatch):  # noqa: ANN001, ANN201
    calls = []
    original = shortcut.charge_request

    async def counting(*args):  # noqa: ANN002, ANN202
        calls.append(args)
        return await original(*args)

    monkeypatch.setattr(shortcut, "charge_request", counting)
    return calls


def _answer(r) -> tuple:  # noqa: ANN001
    headers = {k: v for k, v in r.headers.items() if k not in ("x-correlation-id", "content-length", "date")}
    return r.status_code, r.content, headers


async def _both(w, counted: list, path_json: dict | bytes, headers: dict, expect_shortcut: bool) -> tuple:  # noqa: ANN001
    """The request through the shortcut, then through the route; both answers."""
    kw = {"content": path_json} if isinstance(path_json, bytes) else {"json": path_json}
    before = len(counted)
    fast = await w.client.post("/charges", headers=headers, **kw)
    assert (len(counted) > before) == expect_shortcut
    w.app.dependency_overrides[_Unused] = _Unused
    try:
        before = len(counted)
        slow = await w.client.post("/charges", headers=headers, **kw)
        assert len(counted) == before  # the route answered
    finally:
        w.app.dependency_overrides.clear()
    return fast, slow


async def test_the_shortcut_answers_as_the_route_does(live, counted) -> None:  # noqa: ANN001
    w = live
    voucher = await w.voucher(P, 1, "10")
    day = TODAY.isoformat()
    me = charger(P)

    def body(ref: str, **kw) -> dict:  # noqa: ANN003
        return {"voucher_id": voucher, "provider_reference": ref, "service_date": day, "units": "1", **kw}

    # a new charge, then its retry through the other: the same charge
    fast = await w.client.post("/charges", headers=me, json=body("s-1"))
    assert fast.status_code == 201 and len(counted) == 1
    w.app.dependency_overrides[_Unused] = _Unused
    slow = await w.client.post("/charges", headers=me, json=body("s-1"))
    w.app.dependency_overrides.clear()
    assert slow.status_code == 200 and slow.json() == fast.json()
    # and the other way round
    w.app.dependency_overrides[_Unused] = _Unused
    slow = await w.client.post("/charges", headers=me, json=body("s-2"))
    w.app.dependency_overrides.clear()
    fast = await w.client.post("/charges", headers=me, json=body("s-2"))
    assert slow.status_code == 201 and fast.status_code == 200 and fast.json() == slow.json()
    # retries answer alike, byte for byte
    f, s = await _both(w, counted, body("s-1"), me, True)
    assert _answer(f) == _answer(s) and f.status_code == 200

    cases = [
        # refusals of the rules (DomainError through the app's handler)
        (body("s-3", voucher_id="v-nobody"), me, True),
        (body("s-4", units="1000"), me, True),
        (body("s-5", provider_id="prov-else"), me, True),  # acting for another provider: 403
        # refusals of the caller: the route answers them
        (body("s-6"), {}, False),
        (body("s-7"), {"Authorization": "Bearer not-a-token"}, False),
        (body("s-8"), {"Authorization": "Basic abc"}, False),
        (body("s-9"), {"Authorization": f"Bearer {mint('t:op', ['operator'])}"}, False),
        # refusals of the request: the route answers them
        (body("s-10", units="-1"), me, False),
        (body("s-11", extra="field"), me, False),
        ({"provider_reference": "s-12", "service_date": day, "units": "1"}, me, False),
        (b'{"voucher_id": ', {**me, "Content-Type": "application/json"}, False),
        (b"[1, 2]", {**me, "Content-Type": "application/json"}, False),
        (json.dumps(body("s-13")).encode(), {**me, "Content-Type": "text/plain"}, False),
        (body("s-14"), {**me, "Idempotency-Key": "k" * 201}, False),
    ]
    for payload, headers, through_shortcut in cases:
        f, s = await _both(w, counted, payload, headers, through_shortcut)
        assert _answer(f) == _answer(s), (payload, headers)
        assert 400 <= f.status_code < 500, f.text

    # an Idempotency-Key: the first answer again, through either
    keyed = {**me, "Idempotency-Key": "key-1"}
    fast = await w.client.post("/charges", headers=keyed, json=body("s-20"))
    assert fast.status_code == 201
    f, s = await _both(w, counted, body("s-20"), keyed, True)
    assert _answer(f) == _answer(s) and f.json() == fast.json()
    f, s = await _both(w, counted, body("s-21"), keyed, True)  # the key reused with another body: 422
    assert _answer(f) == _answer(s) and f.status_code == 422
