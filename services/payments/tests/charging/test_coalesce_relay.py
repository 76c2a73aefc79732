"""Payments' relay with its coalescing hook against the real RabbitMQ and PostgreSQL: the ``charge.accepted.v1``
rows of single charges go out as fewer messages (``charge.accepted.v2``), a cancellation still after its charge's
acceptance; a relay that dies between the publish and the mark publishes the same messages (same ids) again; and
vouchers' usage and reporting's read models folded from what arrived equal those folded from the v1 events."""
from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy import func, select

from payments.charging import domain, engine
from payments.charging.coalesce import accepted_coalescer
from payments.charging.rows import OUTBOX_COLUMNS, ChargeRows
from reporting.app import SPEC as REPORTING
from reporting.handlers import BATCH_HANDLERS as REPORTING_HANDLERS
from reporting.models import READ_MODELS
from seteli_shared.bus import Bus
from seteli_shared.db import make_engine, session_factory, upgrade_async
from seteli_shared.events import ChargeCancelled, Envelope, ReceivedEnvelope
from seteli_shared.messaging import OutboxMessage
from seteli_shared.outbox import OutboxRelay, add_event
from seteli_shared.testing import eventually, make_settings
from vouchers.app import SPEC as VOUCHERS
from vouchers.lifecycle_models import Usage
from vouchers.models import Voucher
from vouchers.usage import BATCH_HANDLERS as VOUCHER_HANDLERS

T = OutboxMessage.__table__
NOW = datetime(2026, 6, 20, 9, tzinfo=timezone.utc)


def charge(i: int, funder: str, provider: str) -> engine.NewCharge:
    """Charge ``i``, on the voucher of its funder and provider (v-0 .. v-3)."""
    req = domain.ChargeRequest(provider, NOW.date() - timedelta(days=i % 9), 25 + 50 * (i % 4), None,
                               "weekday" if i % 2 else None, None)
    amounts = domain.ChargeAmounts(2500, 2500 * req.units_x100 // 100, 100 * (i % 3), bool(i % 2),
                                   2500 if i % 2 else None, "pl-1" if i % 2 else None, 150 if i % 5 == 0 else None)
    voucher = f"v-{2 * (funder == '092') + (provider == 'p2')}"
    return engine.NewCharge(str(uuid.uuid4()), voucher, funder, "home_care", f"ref-{i}", req, amounts,
                            NOW + timedelta(microseconds=i))


def cancel_of(c: engine.NewCharge) -> ChargeCancelled:
    return ChargeCancelled(charge_id=c.id, voucher_id=c.voucher_id, funder_id=c.funder_id,
                           provider_id=c.req.provider_id, category="home_care", service_date=c.req.service_date,
                           units=1, amount_cents=c.amounts.amount_cents, cancelled_at=NOW)


class Killed(BaseException):
    pass


class KilledAfterPublishing(OutboxRelay):
    """Dies between publishing (confirmed) and marking the rows sent."""

    async def _publish(self, rows):  # noqa: ANN001, ANN202
        await super()._publish(rows)
        raise Killed()


async def drain(queue, want: int) -> list:  # noqa: ANN001
    got: list = []

    async def enough() -> bool:
        while (m := await queue.get(fail=False, no_ack=True)) is not None:
            got.append(m)
        return len(got) >= want

    await eventually(enough, timeout=20)
    await asyncio.sleep(0.3)
    while (m := await queue.get(fail=False, no_ack=True)) is not None:
        got.append(m)
    return got


async def fold(url: str, spec, handlers: dict, messages: list[Envelope]) -> None:  # noqa: ANN001
    """As a consumer does, one message a transaction, a message id taken once (its inbox)."""
    await upgrade_async(spec.migrations_dir, url)
    db = make_engine(url)
    try:
        if spec is VOUCHERS:
            async with db.begin() as conn:
                await conn.execute(sa.insert(Voucher.__table__), [{
                    "id": f"v-{i}", "funder_id": "092" if i >= 2 else "091", "decision_ref": f"D-{i}", "client_ref": f"c-{i}",
                    "category": "home_care", "unit": "hour", "units_per_period_x100": 800, "period": "validity",
                    "value_per_unit_cents": 2500, "valid_from": date(2026, 1, 1), "valid_until": date(2026, 12, 31),
                    "status": "provider_chosen", "issued_at": NOW, "decision_version": 1, "carry_over": False,
                    "kind": "service_voucher"} for i in range(4)])
        sessions, seen = session_factory(db), set()
        for env in messages:
            if env.id in seen:
                continue
            seen.add(env.id)
            async with sessions() as session, session.begin():
                await handlers[env.type](session, [(env, env.event())])
    finally:
        await db.dispose()


async def state(url: str, tables: list[sa.Table]) -> dict:
    db = make_engine(url)
    try:
        async with db.connect() as conn:
            out = {t.name: sorted(map(tuple, (await conn.execute(select(t))).all())) for t in tables}
            if await conn.run_sync(lambda c: sa.inspect(c).has_table("outbox")):
                bodies = (await conn.execute(select(T.c.routing_key, T.c.body).order_by(T.c.seq))).all()
                out["announced"] = [(k, json.loads(b)["data"]) for k, b in bodies]
        return out
    finally:
        await db.dispose()


async def test_single_charges_go_out_as_fewer_messages_that_fold_as_their_v1_events(pg, namespace, amqp_url):  # noqa: ANN001
    url = await pg.create("pay")
    db = make_engine(url)
    async with db.begin() as conn:
        await conn.run_sync(lambda c: T.create(c))
    bus = Bus(make_settings(service_name="payments", bus_namespace=namespace, amqp_url=amqp_url, database_url=url))
    await bus.connect()
    try:
        channel = await bus.connection.channel()
        spy = await channel.declare_queue(f"{namespace}.spy", durable=True, arguments={"x-queue-type": "quorum"})
        for key in ("charge.accepted.*", "charge.cancelled.*"):
            await spy.bind(bus.settings.exchange_name, key)

        # 30 single charges of two funders and two providers, charge 12 cancelled after its acceptance
        made = [charge(i, "091" if i % 3 else "092", "p1" if i % 2 else "p2") for i in range(30)]
        async with session_factory(db)() as session, session.begin():
            for i, c in enumerate(made):
                await session.execute(sa.insert(T), [dict(zip(OUTBOX_COLUMNS, ChargeRows.event(c)))])
                if i == 12:
                    await add_event(session, cancel_of(c), "payments")
        v1_rows = 30

        coalesce = accepted_coalescer("v2", 4)
        with_hook = [KilledAfterPublishing(db, bus, coalesce=coalesce), OutboxRelay(db, bus, coalesce=coalesce)]
        try:
            await with_hook[0].relay_once()
        except Killed:
            pass
        first = await drain(spy, 1)
        async with db.connect() as conn:
            assert (await conn.execute(select(func.count()).where(T.c.sent_at.is_(None)))).scalar_one() == v1_rows + 1
        while await with_hook[1].relay_once():  # the relay's replacement publishes them again
            pass
        again = await drain(spy, len(first))
        async with db.connect() as conn:
            assert (await conn.execute(select(func.count()).where(T.c.sent_at.is_(None)))).scalar_one() == 0

        envs = [ReceivedEnvelope.model_validate_json(m.body) for m in first]
        # fewer messages: runs [0..12] and [13..29] around the cancellation, per funder and provider, 4 at most
        assert len(first) < v1_rows / 2
        assert {e.type for e in envs} == {"fi.seteli.charge.accepted.v2", "fi.seteli.charge.cancelled.v1"}
        assert [m.message_id for m in again] == [m.message_id for m in first], "the same messages, the same ids"
        assert [m.body for m in again] == [m.body for m in first]
        charged = [c.charge_id for e in envs if e.type.endswith("accepted.v2") for c in e.event().charges]
        assert sorted(charged) == sorted(c.id for c in made), "every charge once"
        # the cancellation after the acceptance of its charge, and before every acceptance written after it
        at = [i for i, e in enumerate(envs) if e.type.endswith("cancelled.v1")][0]
        before = {c.charge_id for e in envs[:at] for c in e.event().charges}
        assert before == {c.id for c in made[:13]}
        assert all(e.event().charges for e in envs[at + 1:])

        # the read models: what arrived (each copy, as the broker delivered it) against the v1 events one by one
        async with db.connect() as conn:
            rows = (await conn.execute(select(T.c.body).order_by(T.c.seq))).scalars().all()
        v1 = [Envelope.model_validate_json(b) for b in rows]
        arrived = [*envs, *(ReceivedEnvelope.model_validate_json(m.body) for m in again)]
        for name, spec, handlers, tables in (
                ("vouchers", VOUCHERS, VOUCHER_HANDLERS, [Usage.__table__, Voucher.__table__]),
                ("reporting", REPORTING, REPORTING_HANDLERS, [m.__table__ for m in READ_MODELS])):
            expected_url, got_url = await pg.create(f"{name}-v1"), await pg.create(f"{name}-v2")
            await fold(expected_url, spec, handlers, v1)
            await fold(got_url, spec, handlers, arrived)
            expected, got = await state(expected_url, tables), await state(got_url, tables)
            assert got == expected, name
            assert any(expected[t.name] for t in tables)
    finally:
        await bus.close()
        await db.dispose()
