"""The voucher's life cycle after issue: issued -> provider chosen -> (amended) -> expired, revoked or
exhausted; the units used and left per period; and the client's comparison of providers.

- **Usage**: payments' charge events fold into ``Usage`` (one row per charge: ``usage.py``, a run of events
  at a time); the units of a period follow ``seteli_shared.periods`` (the same rule payments charges
  by), so what the client sees left is what payments accepts.
- **Exhausted**: a voucher whose units are for its whole validity becomes ``exhausted``
  (``VoucherExhausted``, ``usage.py``) when its units are all used.
- **Expired**: ``expire_vouchers`` (daily: ``POST /jobs/expire``, ``seteli-vouchers expire``) marks every
  voucher in force whose validity has passed ``expired`` (``VoucherExpired``), once.
- **Comparison**: the providers approved for the voucher's funder and category and in force today, with
  the price in force today and the client's own share per unit (``max(0, price - value)``) and per month.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import date, datetime, timezone

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from seteli_shared import audit, periods
from seteli_shared.auth import Principal, Role
from seteli_shared.clock import Clock
from seteli_shared.db import unit_of_work
from seteli_shared.errors import DomainError
from seteli_shared.events import Envelope, PriceListPublished, ProviderRegistered, ProviderUpdated, VoucherExpired
from seteli_shared.ids import cursor_text
from seteli_shared.logging import get_logger
from seteli_shared.money import from_hundredths, units_amount_cents
from seteli_shared.outbox import add_events
from seteli_shared.schemas import PageParams

from . import domain
from .lifecycle_models import PeriodUsage, PriceListEntry, ProviderName, Usage
from .models import ApprovedProvider, Voucher, approval_state
from .usecases import Sessions, _visible

SOURCE = "vouchers"
EXPIRED = "expired"
EXHAUSTED = "exhausted"
REVOKED = "revoked"
#: the statuses of a voucher in force (it may be chosen, charged within its terms, expire, be used up)
IN_FORCE = domain.STATUSES
#: the job's principal in the audit trail
JOB = Principal("job:vouchers.expire", frozenset({Role.OPERATOR}))
log = get_logger(__name__)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


# ------------------------------------------------------------------ usage
async def _used_x100(session: AsyncSession, voucher_id: str, start: date, end: date) -> int:
    return int((await session.execute(sa.select(sa.func.coalesce(sa.func.sum(Usage.units_x100), 0)).where(
        Usage.voucher_id == voucher_id, Usage.service_date >= start, Usage.service_date <= end))).scalar_one())


async def period_units(session: AsyncSession, voucher: Voucher, day: date) -> periods.PeriodUnits | None:
    """The units of the voucher's period that holds ``day`` (None for a voucher without units)."""
    if voucher.units_per_period_x100 is None:
        return None
    start, end = periods.period_bounds(voucher.period, voucher.valid_from, voucher.valid_until, day)
    used = await _used_x100(session, voucher.id, start, end)
    previous = periods.previous_period(voucher.period, voucher.valid_from, voucher.valid_until, day)
    previous_used = None
    if voucher.carry_over and previous is not None:
        previous_used = await _used_x100(session, voucher.id, *previous)
    return periods.period_units(units_per_period_x100=voucher.units_per_period_x100, period=voucher.period,
                                carry_over=voucher.carry_over, valid_from=voucher.valid_from,
                                valid_until=voucher.valid_until, day=day, used_x100=used,
                                previous_used_x100=previous_used)


async def usage_of(sessions: Sessions, voucher: Voucher, clock: Clock) -> PeriodUsage | None:
    """What the client (and the funder) see of the current period: units and money used and left."""
    async with sessions() as session:
        units = await period_units(session, voucher, clock.today())
        if units is None:
            return None
        value_used = int((await session.execute(sa.select(sa.func.coalesce(sa.func.sum(Usage.amount_cents), 0))
                                                .where(Usage.voucher_id == voucher.id,
                                                       Usage.service_date >= units.start,
                                                       Usage.service_date <= units.end))).scalar_one())
    value = voucher.value_per_unit_cents or 0
    if voucher.kind == "personal_budget":  # money, not units: what is left of the period's budget
        return PeriodUsage(
            period_start=units.start, period_end=units.end, units_per_period=from_hundredths(units.allowance_x100),
            units_carried_over=from_hundredths(units.carried_in_x100), units_used=from_hundredths(units.used_x100),
            units_left=from_hundredths(0), value_used_cents=value_used,
            value_left_cents=max(0, (voucher.budget_cents or 0) - value_used))
    return PeriodUsage(
        period_start=units.start, period_end=units.end, units_per_period=from_hundredths(units.allowance_x100),
        units_carried_over=from_hundredths(units.carried_in_x100), units_used=from_hundredths(units.used_x100),
        units_left=from_hundredths(units.left_x100), value_used_cents=value_used,
        value_left_cents=units_amount_cents(from_hundredths(units.left_x100), value))


# ------------------------------------------------------------------ expiry
async def expire_vouchers(sessions: Sessions, clock: Clock, principal: Principal = JOB,
                          batch: int = 500) -> list[str]:
    """Every voucher in force whose ``valid_until`` has passed becomes ``expired`` with ``VoucherExpired``;
    a second run finds none (revoked and exhausted vouchers keep their status). One transaction per batch
    of ``batch`` vouchers, rows locked first: a voucher busy in another transaction (a charge being
    counted) is waited for, not skipped, and PostgreSQL re-checks it after the wait, so two runs never
    expire one twice.
    Returns the ids expired."""
    today, expired = clock.today(), []
    while True:
        async with unit_of_work(sessions) as session:
            rows = list((await session.exec(
                select(Voucher).where(Voucher.valid_until < today, Voucher.status.in_(IN_FORCE))
                .order_by(Voucher.valid_until, Voucher.id).limit(batch).with_for_update())).all())
            if not rows:
                break
            now = clock.now()
            for v in rows:
                v.status, v.expired_at = EXPIRED, now
                session.add(v)
            await session.flush()
            await add_events(session, [VoucherExpired(voucher_id=v.id, funder_id=v.funder_id, category=v.category,
                                                      valid_until=v.valid_until, expired_at=now) for v in rows],
                             SOURCE)
            for v in rows:
                await audit.record(session, principal, "voucher.expire", "voucher", v.id, v.funder_id)
            expired += [v.id for v in rows]
        if len(rows) < batch:
            break
    log.info("vouchers.expired", count=len(expired))
    return expired


# ------------------------------------------------------------------ the registry's facts for the comparison
async def on_price_list_published(session: AsyncSession, _env: Envelope, event: PriceListPublished) -> None:
    """Every list is kept (a published list never changes: the same one again changes nothing)."""
    if event.unit_price_cents <= 0 or await session.get(PriceListEntry, event.price_list_id) is not None:
        return
    session.add(PriceListEntry(price_list_id=event.price_list_id, provider_id=event.provider_id,
                               funder_id=event.funder_id, category=event.category, unit=event.unit,
                               unit_price_cents=event.unit_price_cents, effective_from=event.effective_from,
                               published_at=_utc(event.published_at)))
    await session.flush()


async def _name(session: AsyncSession, provider_id: str, name: str, at: datetime) -> None:
    row = await session.get(ProviderName, provider_id, with_for_update=True)
    if row is None:
        session.add(ProviderName(provider_id=provider_id, name=name, named_at=at))
    elif at >= _utc(row.named_at):
        row.name, row.named_at = name, at
        session.add(row)
    await session.flush()


async def on_provider_registered(session: AsyncSession, _env: Envelope, event: ProviderRegistered) -> None:
    await _name(session, event.provider_id, event.name, _utc(event.registered_at))


async def on_provider_updated(session: AsyncSession, _env: Envelope, event: ProviderUpdated) -> None:
    if event.name:
        await _name(session, event.provider_id, event.name, _utc(event.updated_at))


# ------------------------------------------------------------------ the client's comparison
@dataclass(frozen=True)
class Offer:
    provider_id: str
    name: str
    unit_price_cents: int | None
    price_list_id: str | None
    own_share_per_unit_cents: int | None
    own_share_per_month_cents: int | None


def own_shares(price_cents: int | None, value_cents: int, units_per_period_x100: int | None,
               period: str) -> tuple[int | None, int | None]:
    """The client's own share per unit, ``max(0, price - value)``, and per month (× the units of a month;
    None when the units are not monthly). Without a registered price: unknown."""
    if price_cents is None:
        return None, None
    per_unit = max(0, price_cents - value_cents)
    if units_per_period_x100 is None or period != periods.MONTH:
        return per_unit, None
    return per_unit, units_amount_cents(from_hundredths(units_per_period_x100), per_unit)


def sort_key(o: Offer) -> tuple:
    """By own share (unknown last), then name, then id (unique: a stable order for the cursor)."""
    return (o.own_share_per_unit_cents is None, o.own_share_per_unit_cents or 0, o.name, o.provider_id)


def _cursor(key: tuple) -> str:
    return cursor_text(json.dumps(list(key)))


def _after(cursor: str) -> tuple:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not (isinstance(raw, list) and len(raw) == 4 and isinstance(raw[0], bool) and isinstance(raw[1], int)
                and isinstance(raw[2], str) and isinstance(raw[3], str)):
            raise ValueError
        return tuple(raw)
    except Exception as exc:  # noqa: BLE001
        raise DomainError("invalid_cursor", "the cursor is not one this list gave", status_code=400) from exc


async def compare_providers(sessions: Sessions, principal: Principal, voucher_id: str, clock: Clock,
                            page: PageParams) -> tuple[Voucher, list[Offer], str | None]:
    """The providers the client may choose today for this voucher, cheapest own share first."""
    today = clock.today()
    async with sessions() as session:
        voucher = await _visible(session, principal, voucher_id)
        approvals = (await session.exec(select(ApprovedProvider).where(
            ApprovedProvider.funder_id == voucher.funder_id, ApprovedProvider.category == voucher.category))).all()
        in_force = []
        for a in approvals:
            try:
                domain.check_provider_in_force(approval_state(a), today)
            except DomainError:
                continue
            in_force.append(a.provider_id)
        names = {p.provider_id: p.name for p in (await session.exec(
            select(ProviderName).where(ProviderName.provider_id.in_(in_force)))).all()} if in_force else {}
        lists = (await session.exec(select(PriceListEntry).where(
            PriceListEntry.funder_id == voucher.funder_id, PriceListEntry.category == voucher.category,
            PriceListEntry.provider_id.in_(in_force), PriceListEntry.effective_from <= today))).all() \
            if in_force else []
    current: dict[str, PriceListEntry] = {}
    for p in lists:  # in force today: the latest effective_from, then the latest published, then the greatest id
        held = current.get(p.provider_id)
        if held is None or (p.effective_from, _utc(p.published_at), p.price_list_id) > (
                held.effective_from, _utc(held.published_at), held.price_list_id):
            current[p.provider_id] = p
    offers = []
    for provider_id in in_force:
        price = current.get(provider_id)
        per_unit, per_month = own_shares(price.unit_price_cents if price else None, voucher.value_per_unit_cents or 0,
                                         voucher.units_per_period_x100, voucher.period)
        offers.append(Offer(provider_id=provider_id, name=names.get(provider_id, provider_id),
                            unit_price_cents=price.unit_price_cents if price else None,
                            price_list_id=price.price_list_id if price else None,
                            own_share_per_unit_cents=per_unit, own_share_per_month_cents=per_month))
    offers.sort(key=sort_key)
    if page.cursor:
        after = _after(page.cursor)
        offers = [o for o in offers if sort_key(o) > after]
    chunk = offers[:page.limit]
    cursor = _cursor(sort_key(chunk[-1])) if len(offers) > page.limit else None
    return voucher, chunk, cursor
