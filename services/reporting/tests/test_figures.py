"""Reporting folds events into the figures a funder sees.

First the handlers alone against a real (SQLite, migrated) database; then the whole service on
PostgreSQL and the real broker: events published on the bus reach its consumer, the figures answer
over HTTP, and a redelivered event (same envelope id) is not counted twice.
"""
from __future__ import annotations

import asyncio
import itertools
from contextlib import asynccontextmanager
from datetime import date, datetime, timezone
from decimal import Decimal

import aio_pika
import httpx
import sqlalchemy as sa

from reporting.api import FiguresPublic
from reporting.app import SPEC, create_app
from reporting.handlers import BATCH_HANDLERS, archive
from reporting.models import FunderFigures, ReceivedEvent
from reporting.settings import ReportingSettings
from seteli_shared.auth import mint
from seteli_shared.bus import Bus
from seteli_shared.db import make_engine, session_factory, upgrade_async
from seteli_shared.events import (ChargeAccepted, ChargeSettled, Envelope, Event, ProviderApproved,
                                  ProviderRegistered, SettlementCreated, VoucherIssued, VoucherProviderChosen)
from seteli_shared.testing import eventually, make_settings

AT = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
_ids = itertools.count(1)


def nid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


# ------------------------------------------------------------------ events a funder's month produces
def approved(funder: str, provider: str, category: str = "home_care") -> ProviderApproved:
    return ProviderApproved(approval_id=nid("a"), provider_id=provider, funder_id=funder, category=category,
                            approved_at=AT)


def issued(funder: str, voucher: str, client: str) -> VoucherIssued:
    return VoucherIssued(voucher_id=voucher, funder_id=funder, client_ref=client, decision_ref=nid("D"),
                         category="home_care", unit="hour", units_per_period=Decimal("20"), period="month",
                         value_per_unit_cents=2500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
                         issued_at=AT)


def chosen(funder: str, voucher: str, provider: str) -> VoucherProviderChosen:
    return VoucherProviderChosen(voucher_id=voucher, funder_id=funder, provider_id=provider, category="home_care",
                                 chosen_at=AT)


def charged(funder: str, voucher: str, provider: str, charge: str, units: str, own_share_cents: int = 0
            ) -> ChargeAccepted:
    amount = int(Decimal(units) * 2500)
    return ChargeAccepted(charge_id=charge, voucher_id=voucher, funder_id=funder, provider_id=provider,
                          category="home_care", service_date=date(2026, 11, 20), units=Decimal(units),
                          unit_price_cents=2500, amount_cents=amount, own_share_cents=own_share_cents,
                          accepted_at=AT)


def settled(funder: str, voucher: str, provider: str, charge: str, settlement: str, gross: int, fee: int
            ) -> ChargeSettled:
    return ChargeSettled(charge_id=charge, settlement_id=settlement, voucher_id=voucher, funder_id=funder,
                         provider_id=provider, category="home_care", gross_cents=gross, fee_cents=fee,
                         net_cents=gross - fee, settled_at=AT)


def settlement(funder: str, provider: str, settlement_id: str, charges: int, gross: int, fee: int
               ) -> SettlementCreated:
    return SettlementCreated(settlement_id=settlement_id, funder_id=funder, provider_id=provider,
                             charge_count=charges, gross_cents=gross, fee_cents=fee, net_cents=gross - fee,
                             fee_rate=Decimal("0.05"), created_at=AT)


def a_month(funder: str = "091") -> list[Event]:
    """Two providers (one approved for two categories), three vouchers for two clients, two charges
    (4 h and 1.5 h at 25.00 EUR, the second with a 5.00 EUR own share), the first one settled."""
    return [
        approved(funder, "p1"), approved(funder, "p1", "cleaning"), approved(funder, "p2"),
        issued(funder, "v1", "asiakas-1"), issued(funder, "v2", "asiakas-1"), issued(funder, "v3", "asiakas-2"),
        chosen(funder, "v1", "p1"), chosen(funder, "v3", "p2"),
        charged(funder, "v1", "p1", "c1", "4"), charged(funder, "v3", "p2", "c2", "1.5", own_share_cents=500),
        settled(funder, "v1", "p1", "c1", "s1", 10000, 500), settlement(funder, "p1", "s1", 1, 10000, 500),
    ]


EXPECTED_091 = {
    "funder_id": "091", "providers_approved": 2, "approvals": 3, "vouchers_issued": 3, "clients": 2,
    "provider_choices": 2, "charges_accepted": 2, "units_charged": Decimal("5.5"), "charged_cents": 13750,
    "own_share_cents": 500, "charges_settled": 1, "settlements": 1, "settled_gross_cents": 10000,
    "fee_cents": 500, "net_cents": 9500,
}


# ------------------------------------------------------------------ the handlers on their own
@asynccontextmanager
async def reporting_database(tmp_path):  # noqa: ANN001, ANN201
    url = f"sqlite+aiosqlite:///{tmp_path / 'reporting.db'}"
    await upgrade_async(SPEC.migrations_dir, url)
    engine = make_engine(url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def fold(sessions, events: list[Event], source: str = "test") -> list[Envelope]:  # noqa: ANN001
    """Each event through its batch handler (or the archive) in a transaction of its own."""
    envelopes = []
    for event in events:
        env = Envelope.wrap(event, source)
        async with sessions() as session, session.begin():
            if env.type in BATCH_HANDLERS:
                await BATCH_HANDLERS[env.type](session, [(env, event)])
            else:
                await archive(session, env, event)
        envelopes.append(env)
    return envelopes


async def figures_of(sessions, funder_id: str) -> dict:  # noqa: ANN001
    async with sessions() as session:
        row = await session.get(FunderFigures, funder_id) or FunderFigures(funder_id=funder_id)
        return FiguresPublic.of(row).model_dump()


async def test_a_funder_sees_what_its_events_add_up_to(tmp_path):  # noqa: ANN001
    async with reporting_database(tmp_path) as sessions:
        await fold(sessions, a_month("091"))
        assert await figures_of(sessions, "091") == EXPECTED_091


async def test_funders_figures_do_not_mix(tmp_path):  # noqa: ANN001
    async with reporting_database(tmp_path) as sessions:
        await fold(sessions, a_month("091"))
        await fold(sessions, [approved("049", "p1"), issued("049", "v9", "asiakas-1")])
        espoo = await figures_of(sessions, "049")
        assert (espoo["providers_approved"], espoo["approvals"], espoo["vouchers_issued"], espoo["clients"]) \
            == (1, 1, 1, 1)  # the same provider and client reference count again for another funder
        assert espoo["charges_accepted"] == espoo["charged_cents"] == 0
        assert await figures_of(sessions, "091") == EXPECTED_091
        assert await figures_of(sessions, "853") == {**{k: 0 for k in EXPECTED_091}, "funder_id": "853",
                                                     "units_charged": Decimal("0")}


async def test_every_event_is_archived_also_those_without_a_figure(tmp_path):  # noqa: ANN001
    async with reporting_database(tmp_path) as sessions:
        registered = ProviderRegistered(provider_id="p1", business_id="2617416-4", name="Kotihoiva Oy",
                                        registered_at=AT, **_extra_provider_fields())
        envelopes = await fold(sessions, [*a_month("091"), registered])
        async with sessions() as session:
            archived = {r.id: r for r in (await session.exec(sa.select(ReceivedEvent))).scalars()}
        assert set(archived) == {e.id for e in envelopes}
        kept = Envelope.model_validate_json(archived[envelopes[-1].id].envelope)
        assert kept.type == ProviderRegistered.event_type() and kept.data["provider_id"] == "p1"
        assert await figures_of(sessions, "091") == EXPECTED_091  # the registration adds no figure


def _extra_provider_fields() -> dict:
    """ProviderRegistered's other required fields, whatever the contract adds (filled with plain values)."""
    given = {"provider_id", "business_id", "name", "registered_at"}
    extra: dict = {}
    for name, f in ProviderRegistered.model_fields.items():
        if name in given or not f.is_required():
            continue
        extra[name] = AT if "datetime" in str(f.annotation) else "x"
    return extra


# ------------------------------------------------------------------ the service: bus, inbox, HTTP
async def test_events_from_the_bus_count_once_even_when_redelivered(pg, amqp_url, namespace):  # noqa: ANN001
    settings = ReportingSettings(environment="test", database_url=await pg.create("reporting"), amqp_url=amqp_url,
                                 bus_namespace=namespace)
    app = create_app(settings)
    publisher = Bus(make_settings(service_name="payments", amqp_url=amqp_url, bus_namespace=namespace))
    viewer = {"Authorization": "Bearer " + mint("test:viewer", ["funder_reporting"], funder_id="091")}
    operator = {"Authorization": "Bearer " + mint("test:operator", ["operator"])}

    async def publish(envelopes: list[Envelope]) -> None:
        for env in envelopes:
            await publisher.publish(env.model_dump_json().encode(), env.routing_key, message_id=env.id,
                                    type_=env.type)

    async with app.router.lifespan_context(app):  # migrations, the consumer's queue, the relay
        await publisher.connect()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reporting") as http:
                async def figures(funder: str, headers: dict = viewer) -> dict:  # noqa: B006
                    r = await http.get(f"/funders/{funder}/figures", headers=headers)
                    assert r.status_code == 200, r.text
                    return r.json()

                month = [Envelope.wrap(e, "test") for e in a_month("091")]
                await publish(month)

                async def counted() -> bool:
                    got = await figures("091")
                    return {**got, "units_charged": Decimal(str(got["units_charged"]))} == EXPECTED_091
                await eventually(counted)

                # the broker delivers some of them again (same envelope ids), then something new
                await publish([month[0], month[3], month[8], month[10], month[11]])
                await publish([Envelope.wrap(settlement("049", "p1", "s9", 0, 0, 0), "test")])
                await eventually(lambda: _settled_once(figures, "049", operator))
                assert await counted(), await figures("091")
                # the inbox took them as already done: acknowledged, not failed until dead-lettered
                await asyncio.sleep(2)  # longer than the retries before a dead letter would take
                assert await _messages_in(amqp_url, f"{settings.queue_name}.dlq") == 0
                assert await counted()
        finally:
            await publisher.close()


async def _messages_in(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count
    finally:
        await connection.close()


async def _settled_once(figures, funder: str, headers: dict) -> bool:  # noqa: ANN001
    return (await figures(funder, headers))["settlements"] == 1
