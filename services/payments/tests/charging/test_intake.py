"""Charge intake on PostgreSQL and the real RabbitMQ: bulk charges (CSV the way Finnish spreadsheets
write it, and JSON), Idempotency-Key, charging by voucher code, and a provider cancelling its charge."""
from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import func, select

from payments.charging import fast_path, idempotency, intake
from payments.models import Charge, IdempotencyRecord
from seteli_shared.auth import mint
from seteli_shared.messaging import OutboxMessage
from seteli_shared.testing import charges_announced, eventually

OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}


def charger(provider_id: str, role: str = "provider_charger") -> dict:
    return {"Authorization": f"Bearer {mint(f't:{role}', [role], provider_id=provider_id)}"}


@pytest.fixture
async def world(live):  # noqa: ANN001, ANN201
    """The live payments app of ``conftest.py`` (PostgreSQL, the real RabbitMQ, a FixedClock)."""
    return live


def _by_line(answer: dict) -> dict[int, tuple]:
    return {r["line"]: (r["provider_reference"], r["status"], r["reason"]) for r in answer["results"]}


async def test_a_csv_from_a_finnish_spreadsheet_answers_every_line(world):  # noqa: ANN001
    w, p = world, "prov-csv"
    (v1, code1), (v2, _) = await w.provider_with_vouchers(p, 2, units="10")
    rows = [
        "voucher_code;provider_reference;service_date;units;unit_price",   # line 1: the header
        f"{code1};k-1;1.6.2026;1,5;27,50",                                  # 2: decimal comma, Finnish date
        f"{code1.lower()};k-2;2026-06-02;2;",                               # 3: the code in lower case, no price
        f"{code1};k-3;2026-06-03;0;25,00",                                  # 4: zero units
        f"{code1};k-4;2026-06-30;1;25,00",                                  # 5: in the future
        "ZZZZZZZZZZZ;k-5;2026-06-04;1;25,00",                               # 6: no such code
        f"{code1};k-6;31.2.2026;1;25,00",                                   # 7: no such day
        "",                                                                 # 8: blank, skipped
        f"{code1};k-1;1.6.2026;1,5;27,50",                                  # 9: the same line again
        f"{code1};k-7;2026-06-05;7;",                                       # 10: more units than are left
        f"{code1};k-8;2026-06-05;1,25;1 000,00",                            # 11: above... no list: accepted
    ]
    body = ("\ufeff" + "\r\n".join(rows) + "\r\n").encode("utf-8")
    r = await w.client.post("/charges/bulk", content=body, headers={**charger(p), "content-type": "text/csv"})
    assert r.status_code == 200, r.text
    got = _by_line(r.json())
    assert got == {
        2: ("k-1", "accepted", None), 3: ("k-2", "accepted", None), 4: ("k-3", "refused", "invalid_request"),
        5: ("k-4", "refused", "service_date_in_future"), 6: ("k-5", "refused", "voucher_not_found"),
        7: ("k-6", "refused", "invalid_number_or_date"), 9: ("k-1", "repeated", None),
        10: ("k-7", "refused", "units_exceeded"), 11: ("k-8", "accepted", None)}
    assert (r.json()["accepted"], r.json()["repeated"], r.json()["refused"]) == (3, 1, 5)
    first = r.json()["results"][0]
    charge = (await w.client.get(f"/charges/{first['charge_id']}")).json()
    assert (charge["voucher_id"], charge["units"], charge["unit_price_cents"], charge["amount_cents"],
            charge["own_share_cents"]) == (v1, "1.50", 2750, 3750, 375)
    assert r.json()["results"][-2]["charge_id"] is None
    assert r.json()["results"][6]["charge_id"] == first["charge_id"], "repeated: the first charge"

    # a comma-separated file with decimal points (and the price quoted) is read the same way
    r = await w.client.post("/charges/bulk", headers={**charger(p), "content-type": "text/csv"}, content=(
        f'Voucher_ID,Provider_Reference,Service_Date,Units,Unit_Price\n{v2},c-1,2026-06-01,0.5,"26,00"\n').encode())
    assert _by_line(r.json()) == {2: ("c-1", "accepted", None)}

    # Latin-1 (what Excel writes as "CSV" on Windows) is refused whole, and nothing of it is charged
    latin = "voucher_id;provider_reference;service_date;units\n" + f"{v2};hämeenlinna-1;1.6.2026;1\n"
    r = await w.client.post("/charges/bulk", content=latin.encode("latin-1"),
                            headers={**charger(p), "content-type": "text/csv"})
    assert (r.status_code, r.json()["error"]["reason"]) == (400, "encoding_not_utf8")
    # a missing column (or a known one twice) refuses the file
    for header, reason in (("voucher_id;service_date;units", "csv_missing_column"),
                           ("voucher_id;provider_reference;service_date;units;units", "csv_duplicate_column"),
                           ("provider_reference;service_date;units", "csv_missing_column")):
        r = await w.client.post("/charges/bulk", content=f"{header}\n{v2};x;1.6.2026;1\n".encode(),
                                headers={**charger(p), "content-type": "text/csv"})
        assert (r.status_code, r.json()["error"]["reason"]) == (422, reason), header
    async with w.app.state.runtime.sessions() as session:
        refs = set((await session.execute(select(Charge.provider_reference))).scalars())
    assert refs == {"k-1", "k-2", "k-8", "c-1"}
    assert (await w.client.get("/ledger/check")).json()["ok"]


async def test_unknown_columns_are_ignored_with_one_warning_for_the_file(world):  # noqa: ANN001
    w, p = world, "prov-csv-extra"
    (v1, _), (v2, _) = await w.provider_with_vouchers(p, 2, units="10")
    # a provider's month file with a free-text column, another of its own and a trailing separator
    rows = ["voucher_id;provider_reference;Lisätieto;service_date;units;Hoitaja nro;",
            f"{v1};x-1;aamukäynti, avain naapurilla;1.6.2026;1,5;17;",
            f"{v2};x-2;;2.6.2026;2;;",
            f"{v2};x-3;soitto 131052-308T;3.6.2026;1;4;",  # a personal identity code in the free text
            f"{v1};x-4;ilta;4.6.2026;1;;;;"]  # more cells than the header has columns
    r = await w.client.post("/charges/bulk", content="\r\n".join(rows).encode(),
                            headers={**charger(p), "content-type": "text/csv"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert _by_line(answer) == {2: ("x-1", "accepted", None), 3: ("x-2", "accepted", None),
                                4: (None, "refused", "personal_identity_code"),
                                5: ("x-4", "refused", "csv_too_many_fields")}
    assert answer["results"][2]["details"] == {"fields": ["lisätieto"]} and "131052" not in r.text
    [warning] = answer["warnings"]
    assert (warning["code"], warning["columns"], warning["positions"], warning["count"]) == (
        "csv_unknown_columns_ignored", ["Lisätieto", "Hoitaja nro", ""], [3, 6, 7], 3)
    assert "units" in warning["known_columns"]
    charge = (await w.client.get(f"/charges/{answer['results'][0]['charge_id']}")).json()
    assert (charge["voucher_id"], charge["units"], charge["service_date"]) == (v1, "1.50", "2026-06-01")
    # a file of known columns only has no warning; a JSON list neither
    r = await w.client.post("/charges/bulk", content=f"voucher_id;provider_reference;service_date;units\n"
                            f"{v2};x-5;5.6.2026;1\n".encode(), headers={**charger(p), "content-type": "text/csv"})
    assert r.json()["warnings"] == [] and r.json()["accepted"] == 1
    r = await w.client.post("/charges/bulk", headers=charger(p), json=[
        {"voucher_id": v2, "provider_reference": "x-6", "service_date": "2026-06-06", "units": "1"}])
    assert r.json()["warnings"] == [] and r.json()["accepted"] == 1
    # the required columns are still required, whatever else the file has
    r = await w.client.post("/charges/bulk", content=f"voucher_id;Lisätieto;service_date;units\n"
                            f"{v2};x;7.6.2026;1\n".encode(), headers={**charger(p), "content-type": "text/csv"})
    assert (r.status_code, r.json()["error"]["reason"]) == (422, "csv_missing_column")
    assert r.json()["error"]["details"]["missing"] == ["provider_reference"]
    async with w.app.state.runtime.sessions() as session:
        refs = set((await session.execute(select(Charge.provider_reference).where(Charge.provider_id == p))).scalars())
    assert refs == {"x-1", "x-2", "x-5", "x-6"}


async def test_a_json_bulk_accepts_the_good_lines_and_says_why_the_others_are_refused(world):  # noqa: ANN001
    w, p = world, "prov-json"
    (v1, code1), (v2, _) = await w.provider_with_vouchers(p, 2)
    _, (v_other, code_other) = await w.provider_with_vouchers("prov-else", 2)
    lines = [
        {"voucher_id": v1, "provider_reference": "j-1", "service_date": "2026-06-01", "units": "2"},
        {"voucher_code": code1, "provider_reference": "j-2", "service_date": "2026-06-02", "units": "1"},
        {"voucher_id": v2, "provider_reference": "j-3", "service_date": "2026-06-02", "units": "1", "tip": 1},
        {"voucher_id": v_other, "provider_reference": "j-4", "service_date": "2026-06-02", "units": "1"},
        {"voucher_code": code_other, "provider_reference": "j-5", "service_date": "2026-06-02", "units": "1"},
        {"voucher_id": v1, "voucher_code": code1, "provider_reference": "j-6", "service_date": "2026-06-02",
         "units": "1"},
        "not a line",
        {"voucher_id": v2, "provider_reference": "j-1", "service_date": "2026-06-01", "units": "2"},
    ]
    r = await w.client.post("/charges/bulk", json=lines, headers=charger(p, "provider_billing_system"))
    assert r.status_code == 200, r.text
    assert _by_line(r.json()) == {
        1: ("j-1", "accepted", None), 2: ("j-2", "accepted", None), 3: ("j-3", "refused", "invalid_request"),
        4: ("j-4", "refused", "not_chosen_provider"),
        5: ("j-5", "refused", "voucher_not_found"),  # another provider's client's code tells nothing
        6: ("j-6", "refused", "invalid_request"), 7: (None, "refused", "invalid_request"),
        8: ("j-1", "refused", "duplicate_reference")}
    assert r.json()["results"][2]["details"]["errors"][0]["loc"] == ["tip"]
    accepted_ids = sorted(x["charge_id"] for x in r.json()["results"] if x["status"] == "accepted")
    r = await w.client.post("/charges/bulk", json={"lines": []}, headers=charger(p))
    assert r.status_code == 422
    r = await w.client.post("/charges/bulk", json=[{}] * (intake.MAX_LINES + 1), headers=charger(p))
    assert (r.status_code, r.json()["error"]["reason"]) == (422, "too_many_lines")
    r = await w.client.post("/charges/bulk", content=b"<xml/>", headers={**charger(p), "content-type": "text/xml"})
    assert r.status_code == 415
    # the outbox announces each accepted line once, committed with them: one charge.accepted.v2 listing both
    async with w.app.state.runtime.sessions() as session:
        rows = (await session.execute(select(OutboxMessage.routing_key, OutboxMessage.body).where(
            OutboxMessage.routing_key.like("charge.accepted.%")))).all()
    assert [key for key, _ in rows] == ["charge.accepted.v2"]
    assert sorted(e.charge_id for e in charges_announced(rows)) == accepted_ids


async def test_charging_by_voucher_code(world):  # noqa: ANN001
    w, p = world, "prov-code"
    [(v, code)] = await w.provider_with_vouchers(p, 1)
    body = {"voucher_code": f"{code[:4]}-{code[4:]}", "provider_reference": "c-1", "service_date": "2026-06-01",
            "units": "1"}
    r = await w.client.post("/charges", json=body, headers=charger(p))
    assert (r.status_code, r.json()["voucher_id"]) == (201, v), r.text
    r = await w.client.post("/charges", json=body, headers=charger(p))
    assert r.status_code == 200, "a retry with the provider reference: the first charge"
    r = await w.client.post("/charges", json={**body, "provider_reference": "c-2"}, headers=charger("prov-else"))
    assert (r.status_code, r.json()["error"]["reason"]) == (404, "voucher_not_found")
    r = await w.client.post("/charges", json={**body, "voucher_id": v}, headers=charger(p))
    assert r.status_code == 422, "the voucher by its id or by its code, not both"
    r = await w.client.post("/charges", json={"provider_reference": "c-3", "service_date": "2026-06-01",
                                              "units": "1"}, headers=charger(p))
    assert r.status_code == 422


async def test_idempotency_key_replays_refuses_reuse_and_in_flight(world):  # noqa: ANN001
    w, p = world, "prov-idem"
    [(v, _)] = await w.provider_with_vouchers(p, 1)
    body = {"voucher_id": v, "provider_reference": "i-1", "service_date": "2026-06-01", "units": "1"}
    key = {**charger(p), "Idempotency-Key": "key-1"}
    first = await w.client.post("/charges", json=body, headers=key)
    assert first.status_code == 201, first.text
    again = await w.client.post("/charges", json=body, headers=key)
    assert (again.status_code, again.json()) == (201, first.json()), "the first answer, status and body"
    other = await w.client.post("/charges", json={**body, "units": "2"}, headers=key)
    assert (other.status_code, other.json()["error"]["reason"]) == (422, "idempotency_key_reused")
    # keys are per provider: another provider's same key is its own
    r = await w.client.post("/charges", json=body, headers={**charger("prov-else"), "Idempotency-Key": "key-1"})
    assert r.json()["error"]["reason"] == "not_chosen_provider"
    # a refusal is replayed too
    bad = {**body, "provider_reference": "i-2", "service_date": "2026-06-21"}
    r1 = await w.client.post("/charges", json=bad, headers={**charger(p), "Idempotency-Key": "key-2"})
    w.clock.advance(hours=23)  # the service date has come now, but the key answers as it did
    r2 = await w.client.post("/charges", json=bad, headers={**charger(p), "Idempotency-Key": "key-2"})
    assert (r1.status_code, r2.status_code, r2.json()) == (422, 422, r1.json())

    # bulk: the same file replays; the same key while the first is still being answered: 409
    csv = f"voucher_id;provider_reference;service_date;units\n{v};b-1;1.6.2026;1\n".encode()
    bulk = {**charger(p), "content-type": "text/csv", "Idempotency-Key": "bulk-1"}
    r1 = await w.client.post("/charges/bulk", content=csv, headers=bulk)
    r2 = await w.client.post("/charges/bulk", content=csv, headers=bulk)
    assert r1.status_code == r2.status_code == 200 and r1.json() == r2.json()
    assert r2.json()["results"][0]["status"] == "accepted", "replayed, not answered anew as 'repeated'"
    r3 = await w.client.post("/charges/bulk", content=csv.replace(b"b-1", b"b-2"), headers=bulk)
    assert r3.json()["error"]["reason"] == "idempotency_key_reused"

    release = asyncio.Event()
    original = intake.charge_bulk

    async def slow(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        await release.wait()
        return await original(*args, **kw)

    intake.charge_bulk = slow
    try:
        inflight = {**bulk, "Idempotency-Key": "bulk-2"}
        body2 = csv.replace(b"b-1", b"b-3")
        task = asyncio.create_task(w.client.post("/charges/bulk", content=body2, headers=inflight))

        async def claimed():  # noqa: ANN202
            async with w.app.state.runtime.sessions() as session:
                digest = idempotency.key_digest(w.app.state.settings.idempotency_key_secret, "bulk-2")
                return await session.get(IdempotencyRecord, (p, digest)) is not None

        await eventually(claimed)
        r = await w.client.post("/charges/bulk", content=body2, headers=inflight)
        assert (r.status_code, r.json()["error"]["reason"]) == (409, "request_in_flight")
        release.set()
        done = await task
        assert done.status_code == 200 and done.json()["accepted"] == 1
    finally:
        intake.charge_bulk = original
    r = await w.client.post("/charges/bulk", content=body2, headers=inflight)
    assert r.json() == done.json()


async def test_a_provider_cancels_an_unsettled_charge_and_the_ledger_stays_whole(world):  # noqa: ANN001
    w, p = world, "prov-cancel"
    [(v, _)] = await w.provider_with_vouchers(p, 1, units="2")
    body = {"voucher_id": v, "provider_reference": "x-1", "service_date": "2026-06-01", "units": "2"}
    c = (await w.client.post("/charges", json=body, headers=charger(p))).json()
    full = await w.client.post("/charges", json={**body, "provider_reference": "x-2"}, headers=charger(p))
    assert full.json()["error"]["reason"] == "units_exceeded"
    assert (await w.client.post(f"/charges/{c['id']}/cancel", headers=charger("prov-else"))).status_code == 404
    assert (await w.client.post(f"/charges/{c['id']}/cancel", headers=OPERATOR)).status_code == 403
    r = await w.client.post(f"/charges/{c['id']}/cancel", headers=charger(p, "provider_billing_system"))
    assert (r.status_code, r.json()["status"]) == (200, "cancelled"), r.text
    assert (await w.client.post(f"/charges/{c['id']}/cancel", headers=charger(p))).json()["status"] == "cancelled"
    balances = (await w.client.get("/ledger/balances")).json()
    assert balances["funder:091:voucher_spend"] == 0 and balances[f"provider:{p}:payable"] == 0
    # the units are the voucher's again
    again = await w.client.post("/charges", json={**body, "provider_reference": "x-2"}, headers=charger(p))
    assert again.status_code == 201, again.text
    settled = await w.client.post("/settlements/run")
    assert [s["gross_cents"] for s in settled.json()] == [5000], "the cancelled charge is never settled"
    r = await w.client.post(f"/charges/{again.json()['id']}/cancel", headers=charger(p))
    assert (r.status_code, r.json()["error"]["reason"]) == (409, "charge_settled")
    check = (await w.client.get("/ledger/check")).json()
    assert check["ok"], check
    async with w.app.state.runtime.sessions() as session:
        types = (await session.execute(select(OutboxMessage.routing_key))).scalars().all()
    assert types.count("charge.cancelled.v1") == 1


async def test_bulk_throughput_10000_lines(world):  # noqa: ANN001
    """Measures a 10,000-line CSV bulk on PostgreSQL (printed; run with -s to see it)."""
    w, p = world, "prov-bench"
    vouchers = await w.provider_with_vouchers(p, 1000)
    rows = ["voucher_id;provider_reference;service_date;units"]
    rows += [f"{vouchers[i % 1000][0]};bench-{i};{1 + i % 19}.6.2026;0,25" for i in range(10_000)]
    body = "\n".join(rows).encode()
    started = time.perf_counter()
    r = await w.client.post("/charges/bulk", content=body, headers={**charger(p), "content-type": "text/csv"})
    elapsed = time.perf_counter() - started
    assert r.status_code == 200 and r.json()["accepted"] == 10_000, r.text[:500]
    print(f"\nbulk 10,000 CSV lines on PostgreSQL: {elapsed:.2f} s, {10_000 / elapsed:.0f} charges/s")
    assert (await w.client.get("/ledger/check")).json()["ok"]


async def test_concurrent_bulks_with_the_same_references_charge_each_once(world):  # noqa: ANN001
    """Two bulks at once naming the same provider references (twins on the same voucher, and on other
    vouchers): each reference is charged once; the other bulk answers repeated (same line) or
    duplicate_reference (another voucher); one ChargeAccepted per charge; the ledger stays whole."""
    w, p = world, "prov-twins"
    vouchers = [v for v, _ in await w.provider_with_vouchers(p, 40)]
    same = [{"voucher_id": vouchers[i % 20], "provider_reference": f"t-{i}", "service_date": "2026-06-01",
             "units": "0.5"} for i in range(300)]
    other = [{**line, "voucher_id": vouchers[20 + i % 20]} if i % 3 == 0 else line for i, line in enumerate(same)]
    first, second = await asyncio.gather(
        w.client.post("/charges/bulk", json=same, headers=charger(p)),
        w.client.post("/charges/bulk", json=list(reversed(other)), headers=charger(p)))
    assert first.status_code == second.status_code == 200, (first.text[:300], second.text[:300])
    a = {r["provider_reference"]: r for r in first.json()["results"]}
    b = {r["provider_reference"]: r for r in second.json()["results"]}
    async with w.app.state.runtime.sessions() as session:
        charges = {ref: cid for ref, cid in (await session.execute(select(
            Charge.provider_reference, Charge.id).where(Charge.provider_id == p))).all()}
        accepted_events = charges_announced((await session.execute(select(
            OutboxMessage.routing_key, OutboxMessage.body))).all())
    assert len(charges) == 300
    assert sorted(e.charge_id for e in accepted_events if e.provider_id == p) == sorted(charges.values())
    for i in range(300):
        ref = f"t-{i}"
        x, y = a[ref], b[ref]
        assert sorted([x["status"], y["status"]])[0] == "accepted", (x, y)
        winner, loser = (x, y) if x["status"] == "accepted" else (y, x)
        assert winner["charge_id"] == charges[ref]
        if i % 3 == 0:
            assert (loser["status"], loser["reason"]) == ("refused", "duplicate_reference"), loser
            assert loser["details"] == {"charge_id": charges[ref]}
        else:
            assert (loser["status"], loser["charge_id"]) == ("repeated", charges[ref]), loser
    assert (await w.client.get("/ledger/check")).json()["ok"]

    # twins on vouchers the two bulks do not share: nothing orders them before the insert, which finds
    # the other's reference; that chunk runs again and answers duplicate_reference
    left = [{"voucher_id": vouchers[i % 20], "provider_reference": f"u-{i}", "service_date": "2026-06-02",
             "units": "0.25"} for i in range(200)]
    right = [{**line, "voucher_id": vouchers[20 + i % 20]} for i, line in enumerate(left)]
    first, second = await asyncio.gather(w.client.post("/charges/bulk", json=left, headers=charger(p)),
                                         w.client.post("/charges/bulk", json=right, headers=charger(p)))
    assert first.status_code == second.status_code == 200, (first.text[:300], second.text[:300])
    counts = sorted([(first.json()["accepted"], first.json()["refused"]),
                     (second.json()["accepted"], second.json()["refused"])])
    assert counts == [(0, 200), (200, 0)], counts
    loser = first.json() if first.json()["refused"] else second.json()
    assert {r["reason"] for r in loser["results"]} == {"duplicate_reference"}
    async with w.app.state.runtime.sessions() as session:
        n = (await session.execute(select(func.count()).select_from(Charge).where(
            Charge.provider_id == p, Charge.provider_reference.like("u-%")))).scalar_one()
    assert n == 200
    assert (await w.client.get("/ledger/check")).json()["ok"]


@pytest.mark.parametrize("optimistic_attempts", [3, 0], ids=["two-statements", "lock-first"])
async def test_concurrent_single_charges_of_one_voucher_never_exceed_its_units(
        world, monkeypatch, optimistic_attempts: int):  # noqa: ANN001
    """A charge reads the voucher and writes only if the voucher is still as it read it: twelve charges of
    one unit at once on a voucher of five units give five accepted and seven ``units_exceeded``, whatever
    their interleaving; the ledger stays whole. The same with the lock-first transaction a charge falls back
    to when its voucher keeps changing under it."""
    monkeypatch.setattr(fast_path, "OPTIMISTIC_ATTEMPTS", optimistic_attempts)
    w, p = world, "prov-race"
    [(voucher_id, _code)] = await w.provider_with_vouchers(p, 1, units="5")
    answers = await asyncio.gather(*(w.client.post("/charges", json={
        "voucher_id": voucher_id, "provider_reference": f"race-{i}", "service_date": "2026-06-19", "units": "1"},
        headers=charger(p)) for i in range(12)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 5 + [422] * 7, [a.text for a in answers]
    assert {a.json()["error"]["reason"] for a in answers if a.status_code == 422} == {"units_exceeded"}
    async with w.app.state.runtime.sessions() as session:
        units = (await session.execute(select(func.sum(Charge.units_x100)).where(Charge.voucher_id == voucher_id))
                 ).scalar_one()
        events = (await session.execute(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.routing_key == "charge.accepted.v1", OutboxMessage.body.contains(voucher_id)))).scalar_one()
    assert units == 500 and events == 5
    check = (await w.client.get("/ledger/check", headers=OPERATOR)).json()
    assert check["ok"], check


async def test_a_bulk_charge_between_a_single_charges_read_and_write_is_counted(world, monkeypatch):  # noqa: ANN001
    """A single charge reads its voucher without a lock and writes only if the row is still as it read it. A
    bulk charge (which takes the voucher's lock first) of the same voucher landing between the two must make
    the single charge read again: five units left, the bulk takes all five, the single charge of five is then
    ``units_exceeded``, never a second five on a voucher of five."""
    w, p = world, "prov-mixed"
    [(voucher_id, _code)] = await w.provider_with_vouchers(p, 1, units="5")
    read, go_on = asyncio.Event(), asyncio.Event()
    add = fast_path.OptimisticChargeStore.add

    async def paused_add(self, principal, charges):  # noqa: ANN001, ANN202
        if not go_on.is_set():
            read.set()
            await go_on.wait()
        return await add(self, principal, charges)

    monkeypatch.setattr(fast_path.OptimisticChargeStore, "add", paused_add)
    single = asyncio.create_task(w.client.post("/charges", headers=charger(p), json={
        "voucher_id": voucher_id, "provider_reference": "mixed-single", "service_date": "2026-06-19", "units": "5"}))
    await asyncio.wait_for(read.wait(), 30)  # the single charge has read the voucher: nothing used yet
    bulk = await w.client.post("/charges/bulk", headers=charger(p), json=[
        {"voucher_id": voucher_id, "provider_reference": "mixed-bulk", "service_date": "2026-06-18", "units": "5"}])
    assert bulk.status_code == 200 and bulk.json()["accepted"] == 1, bulk.text
    go_on.set()
    r = await single
    assert (r.status_code, r.json()["error"]["reason"]) == (422, "units_exceeded"), r.text
    async with w.app.state.runtime.sessions() as session:
        units = (await session.execute(select(func.sum(Charge.units_x100)).where(Charge.voucher_id == voucher_id))
                 ).scalar_one()
    assert units == 500
    assert (await w.client.get("/ledger/check", headers=OPERATOR)).json()["ok"]


async def test_single_charges_of_a_monthly_voucher_count_each_month_apart(world):  # noqa: ANN001
    """The fast path sums a monthly voucher's charges over the service month and the month before only (as the
    batch store does): each month's five units are there to be charged whatever earlier months used, and a
    month once full refuses more, also when charged after a later month."""
    w, p = world, "prov-monthly"
    [(voucher_id, _code)] = await w.provider_with_vouchers(p, 1, units="5", period="month")

    async def charge(ref: str, day: str, units: str):  # noqa: ANN202
        return await w.client.post("/charges", headers=charger(p), json={
            "voucher_id": voucher_id, "provider_reference": ref, "service_date": day, "units": units})

    for ref, day in (("m-apr", "2026-04-10"), ("m-may", "2026-05-10"), ("m-jun", "2026-06-10")):
        r = await charge(ref, day, "5")
        assert r.status_code == 201, r.text
    for ref, day in (("m-jun-2", "2026-06-11"), ("m-apr-2", "2026-04-30"), ("m-may-2", "2026-05-31")):
        r = await charge(ref, day, "1")
        assert (r.status_code, r.json()["error"]["reason"]) == (422, "units_exceeded"), r.text
    assert (await w.client.get("/ledger/check", headers=OPERATOR)).json()["ok"]


async def test_twin_single_charges_at_once_make_one_charge(world):  # noqa: ANN001
    """The same charge sent six times at once (a client retrying over a bad line): one 201, five 200 with
    the same charge, one charge row and one ``ChargeAccepted``; a seventh with the same reference and
    other units is refused ``duplicate_reference``."""
    w, p = world, "prov-twin1"
    [(voucher_id, _code)] = await w.provider_with_vouchers(p, 1)
    body = {"voucher_id": voucher_id, "provider_reference": "visit-twin", "service_date": "2026-06-19", "units": "2"}
    answers = await asyncio.gather(*(w.client.post("/charges", json=body, headers=charger(p)) for _ in range(6)))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    other = await w.client.post("/charges", json={**body, "units": "3"}, headers=charger(p))
    assert other.status_code == 409 and other.json()["error"]["reason"] == "duplicate_reference"
    async with w.app.state.runtime.sessions() as session:
        rows = (await session.execute(select(func.count()).select_from(Charge).where(
            Charge.provider_reference == "visit-twin"))).scalar_one()
        events = (await session.execute(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.routing_key == "charge.accepted.v1", OutboxMessage.body.contains(voucher_id)))).scalar_one()
    assert rows == 1 and events == 1


async def test_chunks_answer_as_one_after_another_and_an_unreadable_line_comes_after_the_chunk_before(world):  # noqa: ANN001
    """``charge_bulk`` reads the next chunk's lines while a chunk is in the database: each chunk still sees
    what the ones before it charged (units used, references), and a line that cannot be read is refused
    after the chunk before it has committed, as when the chunks were read one at a time."""
    from seteli_shared.auth import Principal, Role
    from seteli_shared.errors import DomainError

    w, p = world, "prov-chunks"
    (v1, _), (v2, _) = await w.provider_with_vouchers(p, 2, units="5")
    principal = Principal(subject="t:provider_charger", roles=frozenset({Role.PROVIDER_CHARGER}), provider_id=p)
    sessions = w.app.state.runtime.sessions

    def lines(voucher_id: str, unreadable_from: int | None = None):  # noqa: ANN202
        for n in range(1, 9):  # one unit each, on a five-unit voucher; line 8 repeats line 1
            if unreadable_from is not None and n >= unreadable_from:
                raise DomainError("encoding_not_utf8", "not UTF-8", status_code=400)
            yield intake.line_of(n, {"voucher_id": voucher_id, "provider_reference": f"{voucher_id}-{n if n < 8 else 1}",
                                     "service_date": "2026-06-01", "units": "1"})

    answer = await intake.charge_bulk(sessions, w.clock, principal, p, lines(v1), chunk_lines=3)
    assert [(r["line"], r["status"], r["reason"]) for r in answer["results"]] == [
        (1, "accepted", None), (2, "accepted", None), (3, "accepted", None), (4, "accepted", None),
        (5, "accepted", None), (6, "refused", "units_exceeded"), (7, "refused", "units_exceeded"),
        (8, "repeated", None)]
    assert answer["results"][7]["charge_id"] == answer["results"][0]["charge_id"]

    with pytest.raises(DomainError):
        await intake.charge_bulk(sessions, w.clock, principal, p, lines(v2, unreadable_from=5), chunk_lines=3)
    async with sessions() as session:
        refs = (await session.execute(select(Charge.provider_reference).where(Charge.voucher_id == v2))).scalars()
        assert sorted(refs) == [f"{v2}-1", f"{v2}-2", f"{v2}-3"], "the first chunk committed, nothing after it"
    assert (await w.client.get("/ledger/check")).json()["ok"]


async def test_a_csv_file_streams_its_lines_are_charged_as_they_arrive(world):  # noqa: ANN001
    """A month-end CSV is charged while it is still being sent (the first 2,500 lines are committed
    before the rest of the body has come), never held whole; a line with a personal identity code and a
    line further on that is not UTF-8 are refused by themselves; the Idempotency-Key holds for a streamed
    body: 409 while it is in flight, the first answer replayed for the same bytes, 422 for others."""
    w, p = world, "prov-stream"
    (v1, code1), (v2, _) = await w.provider_with_vouchers(p, 2, units="5000")
    sessions = w.app.state.runtime.sessions
    headers = {**charger(p, "provider_billing_system"), "content-type": "text/csv", "Idempotency-Key": "month-11"}
    head = "voucher_id;provider_reference;service_date;units;unit_price\n"
    first = "".join(f"{v1};s-{n};1.6.2026;1;25,00\n" for n in range(2, 2602)).encode()   # file lines 2..2601
    rest = [f"{v2};s-2602;2.6.2026;1,5;25,00\n".encode(),
            f"{v2};asiakas 131052-308T;2.6.2026;1;25,00\n".encode(),            # 2603: personal data
            f"{v2};s-hämeenlinna;2.6.2026;1;25,00\n".encode("latin-1"),         # 2604: not UTF-8, past 64 KiB
            f"{code1};s-2605;3.6.2026;2;25,00\n".replace(code1, v2).encode()]   # 2605
    seen = {}

    async def charged() -> int:
        async with sessions() as session:
            return (await session.execute(select(func.count()).select_from(Charge).where(
                Charge.provider_id == p))).scalar_one()

    async def body(pause: bool):  # noqa: ANN202
        yield head.encode()
        for i in range(0, len(first), 16384):
            yield first[i:i + 16384]
        if pause:  # the first transaction's 2,500 lines are in before the rest of the file is sent
            seen["while_sending"] = await eventually(lambda: _at_least(charged, 2500), timeout=60)
            again = await w.client.post("/charges/bulk", content=b"x", headers=headers)
            seen["in_flight"] = (again.status_code, again.json()["error"]["reason"])
        for chunk in rest:
            yield chunk

    r = await w.client.post("/charges/bulk", content=body(pause=True), headers=headers)
    assert r.status_code == 200, r.text
    assert seen == {"while_sending": True, "in_flight": (409, "request_in_flight")}
    answer = r.json()
    assert (answer["lines"], answer["accepted"], answer["repeated"], answer["refused"]) == (2604, 2602, 0, 2)
    assert _by_line(answer)[2603] == (None, "refused", "personal_identity_code")
    assert answer["results"][2601]["details"] == {"fields": ["provider_reference"]}
    assert _by_line(answer)[2604] == (None, "refused", "encoding_not_utf8")
    assert _by_line(answer)[2605] == ("s-2605", "accepted", None)
    assert "131052" not in r.text and "308T" not in r.text
    assert await charged() == 2602

    # the same bytes with the same key: the first answer, nothing charged again; other bytes: 422
    r = await w.client.post("/charges/bulk", content=body(pause=False), headers=headers)
    assert (r.status_code, r.json()) == (200, answer)
    r = await w.client.post("/charges/bulk", content=head.encode() + first[:100], headers=headers)
    assert (r.status_code, r.json()["error"]["reason"]) == (422, "idempotency_key_reused")
    # without the key, the file again: every line comes back repeated (its provider reference)
    r = await w.client.post("/charges/bulk", content=body(pause=False), headers={
        k: v for k, v in headers.items() if k != "Idempotency-Key"})
    assert (r.json()["accepted"], r.json()["repeated"], r.json()["refused"]) == (0, 2602, 2)
    assert await charged() == 2602
    # personal data in the header refuses the file before anything is read, without echoing it
    r = await w.client.post("/charges/bulk", content=b"voucher_id;131052-308T;units\n", headers={
        **charger(p), "content-type": "text/csv"})
    assert (r.status_code, r.json()["error"]["reason"]) == (422, "personal_identity_code")
    assert "131052" not in r.text
    async with sessions() as session:
        refs = set((await session.execute(select(Charge.provider_reference).where(
            Charge.provider_id == p))).scalars())
    assert not any("131052" in ref or "meenlinna" in ref for ref in refs)
    assert (await w.client.get("/ledger/check", headers=OPERATOR)).json()["ok"]


async def _at_least(count, n: int) -> bool:  # noqa: ANN001
    return await count() >= n


@pytest.mark.parametrize("live_settings", [{"accepted_events": "both", "accepted_event_charges": 2}], ids=["both"])
@pytest.mark.parametrize("media", ["json", "csv"])
async def test_a_bulk_announces_its_charges_in_v2_events_that_stand_for_the_v1_events_they_replace(
        world, media):  # noqa: ANN001
    """With ``ACCEPTED_EVENTS=both`` a bulk writes each charge's ``charge.accepted.v1`` and ``charge.accepted.v2``
    events listing them per funder, at most ``ACCEPTED_EVENT_CHARGES`` a v2 event: each v2 event's ``each()`` is
    exactly the v1 events of its charges (every field), in the order accepted; each body is the one the ordinary
    envelope makes (the bodies written straight from values included)."""
    import json

    from seteli_shared.events import ChargeAccepted, ChargesAccepted, Envelope

    w, p = world, f"prov-v2-{media}"
    vouchers = [(await w.voucher(p, i, "50", funder_id=("091" if i % 3 else "092")), "091" if i % 3 else "092")
                for i in range(6)]
    lines = [(vouchers[i % 6][0], f"{media}-{i}", f"2026-06-{1 + i % 9:02d}", ("1.5", "2", "0.25")[i % 3])
             for i in range(14)]
    if media == "json":
        r = await w.client.post("/charges/bulk", headers=charger(p), json=[
            {"voucher_id": v, "provider_reference": ref, "service_date": day, "units": units, **(
                {"unit_price_cents": 2400} if i % 2 else {})} for i, (v, ref, day, units) in enumerate(lines)])
    else:
        csv = "voucher_id;provider_reference;service_date;units\n" + "".join(
            f"{v};{ref};{day};{units.replace('.', ',')}\n" for v, ref, day, units in lines)
        r = await w.client.post("/charges/bulk", content=csv.encode(),
                                headers={**charger(p), "content-type": "text/csv"})
    assert r.status_code == 200 and r.json()["accepted"] == 14, r.text
    accepted_ids = [x["charge_id"] for x in r.json()["results"]]
    async with w.app.state.runtime.sessions() as session:
        rows = (await session.execute(select(OutboxMessage.routing_key, OutboxMessage.body).where(
            OutboxMessage.routing_key.like("charge.accepted.%")).order_by(OutboxMessage.seq))).all()
    v1 = {e.charge_id: e for e in charges_announced([(k, b) for k, b in rows if k == "charge.accepted.v1"])}
    v2_events = [Envelope.model_validate_json(b).event() for k, b in rows if k == "charge.accepted.v2"]
    assert sorted(v1) == sorted(accepted_ids)
    listed = [e for v2 in v2_events for e in v2.each()]
    assert sorted(e.charge_id for e in listed) == sorted(accepted_ids)  # each charge listed once
    for e in listed:
        assert isinstance(e, ChargeAccepted) and e.model_dump() == v1[e.charge_id].model_dump()
    # per funder, in the order accepted, at most 2 an event: 091 has 9 charges (5 events), 092 has 5 (3 events)
    funder_of = dict(vouchers)
    assert {v2.funder_id for v2 in v2_events} == {"091", "092"}
    for funder, n in (("091", 9), ("092", 5)):
        its = [v2 for v2 in v2_events if v2.funder_id == funder]
        assert [len(v2.charges) for v2 in its] == [2] * (n // 2) + [1]
        assert all(v2.provider_id == p and {funder_of[c.voucher_id] for c in v2.charges} == {funder} for v2 in its)
        assert [c.charge_id for v2 in its for c in v2.charges] == [
            cid for cid, (vid, *_rest) in zip(accepted_ids, lines) if funder_of[vid] == funder]
    for key, body in rows:  # every body as the ordinary envelope of its event makes it
        env = Envelope.model_validate_json(body)
        cls = ChargesAccepted if key == "charge.accepted.v2" else ChargeAccepted
        again = env.model_copy(update={"data": cls.model_validate(json.loads(body)["data"]).model_dump(mode="json")})
        assert again.model_dump_json() == body
    assert (await w.client.get("/ledger/check", headers=OPERATOR)).json()["ok"]
