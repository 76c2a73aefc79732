"""What the reporting fold tests share: the vouchers a month's charges are for, and the read models after a list
of event batches folded through the consumer's batch handlers."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import sqlalchemy as sa

from reporting.app import SPEC
from reporting.handlers import BATCH_HANDLERS
from reporting.models import READ_MODELS
from seteli_shared.db import make_engine, session_factory, upgrade_async
from seteli_shared.events import Envelope, VoucherIssued

AT = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def issued(count: int = 3) -> list[VoucherIssued]:
    """Vouchers v0, v1, ... of funder 091 for home care, 20 hours a month at 25.00 EUR."""
    return [VoucherIssued(voucher_id=f"v{i}", funder_id="091", client_ref=f"asiakas-{i}", decision_ref=f"D{i}",
                          category="home_care", unit="hour", units_per_period=Decimal("20"), period="month",
                          value_per_unit_cents=2500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
                          issued_at=AT) for i in range(count)]


def sqlite(tmp_path, name: str) -> str:  # noqa: ANN001
    return f"sqlite+aiosqlite:///{tmp_path / (name + '.db')}"


def one_each(events: list) -> list[list]:
    """Each event a batch (a transaction) of its own."""
    return [[e] for e in events]


async def fold(url: str, batches: list[list]) -> None:
    """Each batch in a transaction of its own through the consumer's batch handlers, a run of one type at a time
    (as the consumer calls them)."""
    await upgrade_async(SPEC.migrations_dir, url)
    engine = make_engine(url)
    try:
        sessions = session_factory(engine)
        for batch in batches:
            async with sessions() as session, session.begin():
                j = 0
                while j < len(batch):
                    end = j
                    while end < len(batch) and type(batch[end]) is type(batch[j]):
                        end += 1
                    items = [(Envelope.wrap(e, "payments"), e) for e in batch[j:end]]
                    await BATCH_HANDLERS[items[0][0].type](session, items)
                    j = end
    finally:
        await engine.dispose()


async def read_models(url: str) -> dict[str, list[tuple]]:
    """Every read model's rows, sorted."""
    engine = make_engine(url)
    try:
        out = {}
        async with engine.connect() as conn:
            for model in READ_MODELS:
                t = model.__table__
                out[t.name] = sorted(tuple(r) for r in (await conn.execute(sa.select(t))).all())
        return out
    finally:
        await engine.dispose()


async def read_models_after(url: str, batches: list[list]) -> dict[str, list[tuple]]:
    await fold(url, batches)
    return await read_models(url)
