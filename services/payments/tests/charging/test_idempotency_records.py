"""Idempotency-Key records on PostgreSQL: the key is kept only as its keyed hash (HMAC-SHA256 under
IDEMPOTENCY_KEY_SECRET) and still replays; records past their retention are purged, by the purge and by the
service's own scheduler; the keys kept before migration 0013 are hashed in place and still replay; production
refuses the development secret."""
from __future__ import annotations

import asyncio
import hashlib
import json
from contextlib import AsyncExitStack
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select, text

import payments.app
from payments.charging import idempotency as intake
from payments.charging.schemas import ChargeCreate
from payments.models import IdempotencyRecord
from payments.settings import PaymentsSettings
from seteli_shared.auth import mint
from seteli_shared.clock import FixedClock
from seteli_shared.db import make_engine, upgrade
from seteli_shared.testing import eventually

MIGRATIONS = Path(payments.app.__file__).parent / "migrations"


def charger(provider_id: str) -> dict:
    return {"Authorization": f"Bearer {mint('t:charger', ['provider_charger'], provider_id=provider_id)}"}


async def records(w, provider_id: str) -> list[IdempotencyRecord]:  # noqa: ANN001
    async with w.app.state.runtime.sessions() as session:
        return list((await session.execute(select(IdempotencyRecord).where(
            IdempotencyRecord.provider_id == provider_id))).scalars())


async def everywhere(w, needle: str) -> list[str]:  # noqa: ANN001
    """The tables of the payments database that hold ``needle`` anywhere in a row."""
    found = []
    async with w.app.state.runtime.engine.connect() as conn:
        tables = (await conn.execute(text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"))).scalars().all()
        for table in tables:
            hit = await conn.execute(text(f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE :needle'),
                                     {"needle": f"%{needle}%"})
            if hit.scalar():
                found.append(table)
    return found


async def test_the_key_is_kept_only_as_its_keyed_hash_and_the_first_answer_is_still_replayed(live):  # noqa: ANN001
    w, p = live, "prov-hashed"
    [(v, _)] = await w.provider_with_vouchers(p, 1)
    key = "tilaus-2026-06-20-000123"  # an order number: guessable, so never kept as it is
    body = {"voucher_id": v, "provider_reference": "h-1", "service_date": "2026-06-20", "units": "1"}
    first = await w.client.post("/charges", json=body, headers={**charger(p), "Idempotency-Key": key})
    assert first.status_code == 201, first.text
    again = await w.client.post("/charges", json=body, headers={**charger(p), "Idempotency-Key": key})
    assert (again.status_code, again.json()) == (201, first.json()), "replayed from the hashed record"
    other = await w.client.post("/charges", json={**body, "units": "2"}, headers={**charger(p), "Idempotency-Key": key})
    assert other.json()["error"]["reason"] == "idempotency_key_reused"

    [row] = await records(w, p)
    secret = w.app.state.settings.idempotency_key_secret
    assert row.key_hash != key and row.key_hash == intake.key_digest(secret, key)
    assert row.key_hash != hashlib.sha256(key.encode()).hexdigest(), "keyed: not a hash anyone can recompute"
    assert intake.key_digest("another deployment's secret", key) != row.key_hash
    assert await everywhere(w, key) == [], "the key is in no row of any table"
    assert await everywhere(w, row.key_hash) == ["payments_idempotency"]


async def test_a_purge_removes_records_past_their_retention_and_keeps_the_fresh(live):  # noqa: ANN001
    w, p = live, "prov-purge"
    [(v, _)] = await w.provider_with_vouchers(p, 1)
    old = {"voucher_id": v, "provider_reference": "old-1", "service_date": "2026-06-20", "units": "1"}
    fresh = {**old, "provider_reference": "fresh-1"}
    assert (await w.client.post("/charges", json=old, headers={**charger(p), "Idempotency-Key": "k-old"})
            ).status_code == 201
    w.clock.advance(hours=23)
    assert (await w.client.post("/charges", json=fresh, headers={**charger(p), "Idempotency-Key": "k-fresh"})
            ).status_code == 201
    assert len(await records(w, p)) == 2
    w.clock.advance(hours=2)  # the first key is 25 hours old: past the 24 hours it is kept; the other 2 hours

    assert await intake.forget_expired_keys(w.app.state.runtime.sessions, w.clock) == 1
    secret = w.app.state.settings.idempotency_key_secret
    assert [r.key_hash for r in await records(w, p)] == [intake.key_digest(secret, "k-fresh")]
    # the purged key no longer replays its first answer (201): the request is answered anew, a repeat (200)
    r = await w.client.post("/charges", json=old, headers={**charger(p), "Idempotency-Key": "k-old"})
    assert r.status_code == 200, r.text
    r = await w.client.post("/charges", json=fresh, headers={**charger(p), "Idempotency-Key": "k-fresh"})
    assert r.status_code == 201, "the fresh key still replays its first answer"


@pytest.mark.parametrize("live_settings", [{"idempotency_purge_interval_seconds": 0.2}])
async def test_the_service_purges_expired_records_on_its_own_schedule_and_logs_each_run(live, log_lines):  # noqa: ANN001
    w, p = live, "prov-scheduled"
    [(v, _)] = await w.provider_with_vouchers(p, 1)
    body = {"voucher_id": v, "provider_reference": "s-1", "service_date": "2026-06-20", "units": "1"}
    assert (await w.client.post("/charges", json=body, headers={**charger(p), "Idempotency-Key": "k-1"})
            ).status_code == 201
    w.clock.advance(hours=12)
    assert (await w.client.post("/charges", json={**body, "provider_reference": "s-2"},
                                headers={**charger(p), "Idempotency-Key": "k-2"})).status_code == 201
    await asyncio.sleep(0.6)  # a few runs: nothing has expired yet
    assert len(await records(w, p)) == 2
    w.clock.advance(hours=12, minutes=1)  # k-1 is past its 24 hours, k-2 12 hours old

    async def only_the_fresh_one_left():  # noqa: ANN202
        return len(rows := await records(w, p)) == 1 and rows[0].expires_at > w.clock.now()

    await eventually(only_the_fresh_one_left)
    runs = log_lines.events("idempotency.purged")
    assert len(runs) >= 3, "a line for each run"
    assert any(run["removed"] == 1 for run in runs) and all(run["removed"] in (0, 1) for run in runs)


async def test_keys_kept_before_the_migration_are_hashed_in_place_and_still_replay(pg, namespace, amqp_url):  # noqa: ANN001
    url = await pg.create("payments")
    await asyncio.to_thread(upgrade, MIGRATIONS, url, "0012")
    secret = "a-secret-of-this-deployment-" + "x" * 20
    body = {"voucher_id": "v-legacy", "provider_reference": "legacy-1", "service_date": "2026-06-20", "units": "1"}
    fingerprint = intake.request_hash("charges.create", ChargeCreate.model_validate(body).model_dump(mode="json"))
    answer = {"id": "c-legacy", "note": "the answer kept before the migration"}
    settings = PaymentsSettings(database_url=url, environment="test", amqp_url=amqp_url, bus_namespace=namespace,
                                idempotency_key_secret=secret, relay_idle_seconds=0.05)
    async with AsyncExitStack() as stack:
        app = payments.app.create_app(settings)
        app.state.clock = FixedClock(datetime(2026, 6, 20, 9, 0, tzinfo=timezone.utc))
        engine = make_engine(url)
        stack.push_async_callback(engine.dispose)
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO payments_idempotency (provider_id, key, operation, request_hash, status_code, "
                "response_body, created_at, expires_at) VALUES (:p, :k, 'charges.create', :h, 201, :b, :c, :e)"),
                {"p": "prov-legacy", "k": "legacy-key-1", "h": fingerprint, "b": json.dumps(answer),
                 "c": datetime(2026, 6, 20, 8, 0, tzinfo=timezone.utc),
                 "e": datetime(2026, 6, 21, 8, 0, tzinfo=timezone.utc)})

        await stack.enter_async_context(app.router.lifespan_context(app))  # migrates to the head with its settings
        async with engine.connect() as conn:
            kept = (await conn.execute(text("SELECT provider_id, key_hash FROM payments_idempotency"))).all()
        assert kept == [("prov-legacy", intake.key_digest(secret, "legacy-key-1"))]
        client = await stack.enter_async_context(httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                   base_url="http://test"))
        r = await client.post("/charges", json=body, headers={**charger("prov-legacy"), "Idempotency-Key": "legacy-key-1"})
        assert (r.status_code, r.json()) == (201, answer), "the record kept before the migration replays"


def test_production_refuses_the_development_secret(tmp_path):  # noqa: ANN001
    production = dict(environment="production", jwks_url="/nonexistent", database_url="sqlite+aiosqlite://")
    for secret in ({}, {"idempotency_key_secret": "too-short"}):
        with pytest.raises(ValidationError, match="IDEMPOTENCY_KEY_SECRET"):
            PaymentsSettings(**production, **secret)
    assert PaymentsSettings(**production, idempotency_key_secret="s" * 40).idempotency_key_secret == "s" * 40
