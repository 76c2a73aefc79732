"""Formula-table use cases: funders publish versioned value tables for income-related vouchers, anyone of
the funder's staff may read them and preview a value; issuing takes a voucher's kind terms from here.

A gross income passes through ``calculate`` and ``kind_terms`` as an argument only: it is never stored,
put in an event, an audit record or a log line.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import select

from seteli_shared import audit
from seteli_shared.auth import Principal, ensure_visible
from seteli_shared.clock import Clock
from seteli_shared.db import once_more_on_conflict, unit_of_work
from seteli_shared.errors import Conflict, DomainError, NotFound
from seteli_shared.logging import get_logger
from seteli_shared.schemas import PageParams, paginate

from . import domain, kinds, value_engine
from .models import Funder, ValueTable

log = get_logger(__name__)
Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class TableContent:
    funder_id: str
    category: str
    table_version: str
    table: value_engine.ValueTable


def engine_table(row: ValueTable) -> value_engine.ValueTable:
    return value_engine.ValueTable(row.max_value_per_unit_cents, row.min_value_per_unit_cents,
                                   tuple(int(x) for x in row.income_limits_cents),
                                   tuple(Decimal(x) for x in row.percentages), row.extra_person_limit_cents,
                                   Decimal(row.extra_person_points))


def _differing(row: ValueTable, table: value_engine.ValueTable) -> list[str]:
    held = engine_table(row)
    return [f for f in ("max_value_per_unit_cents", "min_value_per_unit_cents", "income_limits_cents",
                        "percentages", "extra_person_limit_cents", "extra_person_points")
            if getattr(held, f) != getattr(table, f)]


async def publish_table(sessions: Sessions, clock: Clock, principal: Principal,
                        asked: TableContent) -> tuple[ValueTable, bool]:
    """Publish a version of the funder's formula table for a category. Versions are immutable: the same
    content again is a retry (False); other content under a published version: 409 ``value_table_version_exists``."""
    ensure_visible(principal, "funder", funder_id=asked.funder_id)
    value_engine.check_table(asked.table)

    async def publish() -> tuple[ValueTable, bool]:
        async with unit_of_work(sessions) as session:
            domain.check_funder_known(await session.get(Funder, asked.funder_id) is not None)
            existing = await session.get(ValueTable, (asked.funder_id, asked.category, asked.table_version))
            if existing is not None:
                differing = _differing(existing, asked.table)
                if differing:
                    raise Conflict("value_table_version_exists", "this version of the value table is published "
                                   "with other content; publish a new version", differing=differing)
                return existing, False
            t = asked.table
            row = ValueTable(funder_id=asked.funder_id, category=asked.category, table_version=asked.table_version,
                             max_value_per_unit_cents=t.max_value_per_unit_cents,
                             min_value_per_unit_cents=t.min_value_per_unit_cents,
                             income_limits_cents=list(t.income_limits_cents),
                             percentages=[format(p, "f") for p in t.percentages],
                             extra_person_limit_cents=t.extra_person_limit_cents,
                             extra_person_points=format(t.extra_person_points, "f"), published_at=clock.now())
            session.add(row)
            await session.flush()
            await audit.record(session, principal, "value_table.publish", "value_table",
                               f"{row.category}/{row.table_version}", row.funder_id)
        return row, True

    row, new = await once_more_on_conflict(publish)
    if new:
        log.info("value_table.published", funder_id=row.funder_id, category=row.category,
                 table_version=row.table_version)
    return row, new


async def tables_page(sessions: Sessions, principal: Principal, funder_id: str, page: PageParams,
                      category: str | None = None) -> tuple[list[ValueTable], str | None]:
    ensure_visible(principal, "funder", funder_id=funder_id)
    q = select(ValueTable).where(ValueTable.funder_id == funder_id)
    if category is not None:
        q = q.where(ValueTable.category == category)
    async with sessions() as session:
        return await paginate(session, q, [ValueTable.category, ValueTable.table_version], page)


async def _table(session: AsyncSession, funder_id: str, category: str, version: str) -> ValueTable:
    row = await session.get(ValueTable, (funder_id, category, version))
    if row is None:
        raise NotFound("value_table")
    return row


async def get_table(sessions: Sessions, principal: Principal, funder_id: str, category: str,
                    version: str) -> ValueTable:
    ensure_visible(principal, "funder", funder_id=funder_id)
    async with sessions() as session:
        return await _table(session, funder_id, category, version)


async def calculate(sessions: Sessions, principal: Principal, funder_id: str, category: str, version: str,
                    household_size: int, gross_monthly_income_cents: int,
                    units_per_month: Decimal) -> tuple[ValueTable, value_engine.ValueResult]:
    """Preview the value a voucher would get; reads only (the income is not kept, audited or logged)."""
    ensure_visible(principal, "funder", funder_id=funder_id)
    async with sessions() as session:
        row = await _table(session, funder_id, category, version)
    return row, value_engine.value_per_unit(engine_table(row), household_size, gross_monthly_income_cents,
                                            units_per_month)


async def kind_terms(session: AsyncSession, body) -> kinds.KindTerms:  # noqa: ANN001
    """The kind terms of a voucher request (``schemas.VoucherCreate``), the value of an income-related
    one from the funder's table version for the category (422 ``unknown_value_table`` without it)."""
    if body.kind != value_engine.INCOME_RELATED:
        return kinds.terms_of(body)
    row = await session.get(ValueTable, (body.funder_id, body.category, body.value_table_version))
    if row is None:
        raise DomainError("unknown_value_table", "the funder has published no value table of this version for "
                          "the category", table_version=body.value_table_version)
    return kinds.terms_of(body, engine_table(row))
