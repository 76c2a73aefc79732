"""Price use cases: each write is one transaction that changes state, records its audit entry and
writes its events to the outbox together (nothing is stored on a refusal). Time comes from the
``Clock`` passed in. The public comparison is one query for the page and one for its service units.
"""
from __future__ import annotations

import base64
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit
from seteli_shared.auth import Principal
from seteli_shared.clock import Clock
from seteli_shared.db import unit_of_work
from seteli_shared.errors import DomainError, NotFound
from seteli_shared.events import PriceListPublished
from seteli_shared.ids import cursor_text, new_id
from seteli_shared.logging import get_logger
from seteli_shared.outbox import add_event
from seteli_shared.schemas import PageParams, paginate

from . import domain, prices
from .models import Approval, Funder, Provider, Rulebook, ServiceUnit
from .price_models import PriceList

SOURCE = "registry"
Sessions = async_sessionmaker[AsyncSession]
log = get_logger(__name__)

def approval_in_force(on: date) -> Any:
    """An approval puts the provider in the funder's register on a date while it is active, or while
    its suspension or revocation has not yet taken effect."""
    return sa.or_(Approval.status == "active",
                  sa.and_(Approval.status.in_(("suspended", "revoked")), Approval.status_effective_from > on))


async def _rulebook_needs_approval(session: AsyncSession, funder_id: str, category: str) -> bool:
    """Whether the funder's latest rulebook for the category wants price changes approved. A funder
    without a rulebook for the category does not use it (``category_not_used_by_funder``)."""
    latest = (await session.execute(select(Rulebook).where(
        Rulebook.funder_id == funder_id, Rulebook.category == category).order_by(
        Rulebook.published_at.desc(), Rulebook.id.desc()).limit(1))).scalars().first()
    if latest is None:
        raise DomainError("category_not_used_by_funder", "the funder has no rulebook for this category",
                          funder_id=funder_id, category=category)
    return latest.price_changes_need_approval


# ------------------------------------------------------------------ price lists
@dataclass(frozen=True)
class PriceAsked:
    funder_id: str
    category: str
    unit_price_cents: int
    tariffs: Mapping[str, int | None]
    effective_from: date


async def create_price_list(sessions: Sessions, clock: Clock, principal: Principal, provider_id: str,
                            asked: PriceAsked) -> PriceList:
    """A provider publishes a price for a funder and category from a date: published at once
    (PriceListPublished), or pending the funder's approval when its rulebook says so."""
    category = prices.check_category(asked.category)
    unit_price = prices.check_price(asked.unit_price_cents)
    tariffs = prices.check_tariffs(asked.tariffs)
    effective_from = prices.check_effective_from(asked.effective_from, clock.today())
    async with unit_of_work(sessions) as session:
        if await session.get(Provider, provider_id) is None:
            raise NotFound("provider")
        if await session.get(Funder, asked.funder_id) is None:
            raise DomainError("unknown_funder", "no funder with this ID is registered", funder_id=asked.funder_id)
        needs_approval = await _rulebook_needs_approval(session, asked.funder_id, category)
        approved = (await session.execute(select(Approval.id).where(
            Approval.provider_id == provider_id, Approval.funder_id == asked.funder_id,
            Approval.category == category, approval_in_force(clock.today())).limit(1))).scalar()
        if approved is None:
            raise DomainError("provider_not_approved", "the provider is not approved by this funder for this "
                              "category", funder_id=asked.funder_id, category=category)
        now = clock.now()
        status = prices.initial_status(needs_approval)
        price_list = PriceList(
            id=new_id(), provider_id=provider_id, funder_id=asked.funder_id, category=category,
            unit=prices.unit_of(category), unit_price_cents=unit_price, effective_from=effective_from,
            status=status.value, created_at=now,
            published_at=now if status is prices.PriceListStatus.PUBLISHED else None,
            **{f"{k}_cents": v for k, v in tariffs.items()})
        session.add(price_list)
        await session.flush()
        if status is prices.PriceListStatus.PUBLISHED:
            await add_event(session, _published(price_list), SOURCE)
        await audit.record(session, principal, "price_list.create", "price_list", price_list.id, asked.funder_id)
    log.info("price_list.created", price_list_id=price_list.id, provider_id=provider_id,
             funder_id=asked.funder_id, status=price_list.status)
    return price_list


def tariffs_of(price_list: Any) -> dict[str, int]:
    return {k: v for k in prices.TARIFF_KEYS if (v := getattr(price_list, f"{k}_cents")) is not None}


def _published(price_list: PriceList) -> PriceListPublished:
    return PriceListPublished(
        price_list_id=price_list.id, provider_id=price_list.provider_id, funder_id=price_list.funder_id,
        category=price_list.category, unit=price_list.unit, unit_price_cents=price_list.unit_price_cents,
        tariffs=tariffs_of(price_list), effective_from=price_list.effective_from,
        published_at=price_list.published_at)


async def decide_price_list(sessions: Sessions, clock: Clock, principal: Principal, price_list_id: str,
                            decision: prices.Decision, grounds: str | None = None) -> tuple[PriceList, bool]:
    """The funder approves (published: PriceListPublished) or rejects a pending price list; a rejection
    needs written grounds (422 ``grounds_required``), shown to the provider with the list. The same
    decision again changes nothing; the other one is refused (409 ``price_list_not_pending``)."""
    if decision is prices.Decision.REJECT:
        grounds = domain.require_grounds(grounds)
    async with unit_of_work(sessions) as session:
        price_list = await _visible_price_list(session, principal, price_list_id, for_update=True)
        status, changed = prices.decide(price_list.status, decision)
        if changed:
            if status is prices.PriceListStatus.PUBLISHED:
                prices.check_still_open(price_list.effective_from, clock.today())
            now = clock.now()
            price_list.status = status.value
            price_list.decided_at = now
            if decision is prices.Decision.REJECT:
                price_list.grounds = grounds
            if status is prices.PriceListStatus.PUBLISHED:
                price_list.published_at = now
                await add_event(session, _published(price_list), SOURCE)
            session.add(price_list)
            await session.flush()
            await audit.record(session, principal, f"price_list.{decision.value}", "price_list", price_list.id,
                               price_list.funder_id)
    if changed:
        log.info("price_list.decided", price_list_id=price_list_id, status=price_list.status)
    return price_list, changed


async def _visible_price_list(session: AsyncSession, principal: Principal, price_list_id: str, *,
                              for_update: bool = False) -> PriceList:
    q = select(PriceList).where(PriceList.id == price_list_id)
    if for_update:
        q = q.with_for_update()
    price_list = (await session.execute(q)).scalars().first()
    if price_list is None or not (principal.is_operator or principal.funder_id == price_list.funder_id):
        raise NotFound("price_list")
    return price_list


async def price_lists_page(sessions: Sessions, principal: Principal, provider_id: str, page: PageParams, *,
                           funder_id: str | None = None, category: str | None = None,
                           status: str | None = None) -> tuple[list[PriceList], str | None]:
    """A provider's whole price history in the order the lists were made; funder staff see the lists
    for their own funder."""
    q = select(PriceList).where(PriceList.provider_id == provider_id)
    if principal.funder_id and not principal.is_operator:
        q = q.where(PriceList.funder_id == principal.funder_id)
    if funder_id:
        q = q.where(PriceList.funder_id == funder_id)
    if category:
        q = q.where(PriceList.category == category)
    if status:
        q = q.where(PriceList.status == status)
    async with sessions() as session:
        if await session.get(Provider, provider_id) is None:
            raise NotFound("provider")
        return await paginate(session, q, [PriceList.created_at, PriceList.id], page)


async def _units_of(session: AsyncSession, provider_ids: Sequence[str]) -> dict[str, list[ServiceUnit]]:
    out: dict[str, list[ServiceUnit]] = defaultdict(list)
    if provider_ids:
        q = select(ServiceUnit).where(ServiceUnit.provider_id.in_(provider_ids)).order_by(
            ServiceUnit.provider_id, ServiceUnit.position)
        for unit in (await session.execute(q)).scalars():
            out[unit.provider_id].append(unit)
    return out


# ------------------------------------------------------------------ the public comparison
SORTS = ("price", "own_share", "name")
NO_PRICE = prices.MAX_UNIT_PRICE_CENTS + 1  # a provider without a price in force sorts last


@dataclass(frozen=True)
class Comparison:
    funder_id: str
    category: str
    on: date
    sort: str = "price"
    municipality: str | None = None
    language: str | None = None
    voucher_value_cents: int | None = None
    units_per_month: Decimal | None = None


@dataclass
class Compared:
    provider_id: str
    name: str
    contact_email: str | None
    contact_phone: str | None
    languages: list[str]
    price_list_id: str | None
    unit: str | None
    unit_price_cents: int | None
    tariffs: dict[str, int]
    effective_from: date | None
    own_share_cents_per_unit: int | None
    own_share_cents_per_month: int | None
    service_units: list[dict[str, str]]


async def _unit_rows_of(session: AsyncSession, provider_ids: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    """The service units of the page's providers in their order: plain rows (no ORM objects)."""
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    if provider_ids:
        u = ServiceUnit.__table__.c
        q = select(u.provider_id, u.name, u.street_address, u.postal_code, u.municipality_code).where(
            u.provider_id.in_(provider_ids)).order_by(u.provider_id, u.position)
        for r in (await session.execute(q)).all():
            out[r.provider_id].append({"name": r.name, "street_address": r.street_address,
                                       "postal_code": r.postal_code, "municipality_code": r.municipality_code})
    return out


def _in_force(c: Comparison) -> sa.Subquery:
    """Each provider's published lists for the funder and category up to the date, ranked: 1 is in force."""
    pl = PriceList.__table__.c
    rank = sa.func.row_number().over(partition_by=pl.provider_id,
                                     order_by=(pl.effective_from.desc(), pl.published_at.desc(), pl.id.desc()))
    return select(pl.provider_id, pl.id, pl.unit, pl.unit_price_cents, pl.weekday_cents, pl.weekday_evening_cents,
                  pl.saturday_cents, pl.sunday_cents, pl.effective_from, rank.label("rank")).where(
        pl.funder_id == c.funder_id, pl.category == c.category,
        pl.status == prices.PriceListStatus.PUBLISHED.value, pl.effective_from <= c.on).subquery("in_force")


def comparison_query(c: Comparison, after: tuple[Any, str] | None, limit: int) -> sa.Select:
    """One statement: the page of the providers the funder has approved for the category (in force on
    the date), each with its price in force, in the stable order (sort value, provider id), from the
    keyset ``after``."""
    p, a, su = Provider.__table__.c, Approval.__table__.c, ServiceUnit.__table__.c
    cur = _in_force(c)
    price = cur.c.unit_price_cents
    if c.sort == "name":
        key: Any = p.name
    elif c.sort == "own_share":
        share = price - (c.voucher_value_cents or 0)
        key = sa.case((price.is_(None), NO_PRICE), (share > 0, share), else_=0)
    else:
        key = sa.func.coalesce(price, NO_PRICE)
    key = key.label("sort_value")
    q = (select(p.id, p.name, p.contact_email, p.contact_phone, p.languages, cur.c.id.label("price_list_id"),
                cur.c.unit, price, cur.c.weekday_cents, cur.c.weekday_evening_cents, cur.c.saturday_cents,
                cur.c.sunday_cents, cur.c.effective_from, key)
         .select_from(Approval.__table__)
         .join(Provider.__table__, p.id == a.provider_id)
         .join(cur, sa.and_(cur.c.provider_id == p.id, cur.c.rank == 1), isouter=True)
         .where(a.funder_id == c.funder_id, a.category == c.category, approval_in_force(c.on)))
    if c.municipality:  # a service unit there, or the provider serves it (home care comes to the client)
        q = q.where(sa.or_(
            sa.exists(select(su.id).where(su.provider_id == p.id, su.municipality_code == c.municipality)),
            sa.cast(p.municipalities, sa.Text).like(f'%"{c.municipality}"%')))
    if c.language:  # codes are checked ([a-z]{2}): no wildcard can come in
        q = q.where(sa.cast(p.languages, sa.Text).like(f'%"{c.language}"%'))
    if after is not None:
        q = q.where(sa.tuple_(key, p.id) > sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
    return q.order_by(key, p.id).limit(limit + 1)


def _cursor_of(c: Comparison, value: Any, provider_id: str) -> str:
    return cursor_text(json.dumps([c.sort, c.voucher_value_cents, c.on.isoformat(), value, provider_id]))


def _after(c: Comparison, cursor: str | None) -> tuple[Any, str] | None:
    """The keyset a cursor names; a cursor of another sort, voucher value or date is refused."""
    if not cursor:
        return None
    try:
        sort, value_cents, on, value, provider_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        kind = str if c.sort == "name" else int
        if ([sort, value_cents, on] != [c.sort, c.voucher_value_cents, c.on.isoformat()]
                or type(value) is not kind or not isinstance(provider_id, str)):
            raise ValueError
        return value, provider_id
    except (ValueError, TypeError, json.JSONDecodeError):
        raise DomainError("invalid_cursor", "the cursor is not one this list gave", status_code=400) from None


async def compare(sessions: Sessions, c: Comparison, page: PageParams) -> tuple[list[Compared], str | None]:
    after = _after(c, page.cursor)
    async with sessions() as session:
        # a read that changes nothing: no BEGIN and ROLLBACK round trips around its two statements
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        rows = (await session.execute(comparison_query(c, after, page.limit))).all()
        if not rows and after is None and await session.get(Funder, c.funder_id) is None:
            raise NotFound("funder")
        rows, more = rows[: page.limit], len(rows) > page.limit
        units = await _unit_rows_of(session, [r.id for r in rows])
    out = []
    for r in rows:
        share = None if r.unit_price_cents is None or c.voucher_value_cents is None else \
            prices.own_share_per_unit(r.unit_price_cents, c.voucher_value_cents)
        monthly = None if share is None or c.units_per_month is None else \
            prices.own_share_per_month(share, c.units_per_month)
        out.append(Compared(
            provider_id=r.id, name=r.name, contact_email=r.contact_email, contact_phone=r.contact_phone,
            languages=list(r.languages or []), price_list_id=r.price_list_id, unit=r.unit,
            unit_price_cents=r.unit_price_cents, tariffs=tariffs_of(r), effective_from=r.effective_from,
            own_share_cents_per_unit=share, own_share_cents_per_month=monthly, service_units=units[r.id]))
    cursor = _cursor_of(c, rows[-1].sort_value, rows[-1].id) if more else None
    return out, cursor


# ------------------------------------------------------------------ public pages (no login)
@dataclass
class ApprovalInForce:
    """One funder's approval of the provider for one category, in force on the date, with its price."""

    funder_id: str
    funder_name: str | None
    category: str
    unit: str
    approved_at: Any
    price: dict[str, Any] | None
    #: with a voucher's value: max(0, price - value); null without one or without a price
    own_share_cents_per_unit: int | None = None


@dataclass
class PublicProvider:
    """What the public may see of an approved provider: never its account, insurance policies,
    supervisory register number or anything the funders wrote about it."""

    provider_id: str
    name: str
    business_id: str
    contact_email: str | None
    contact_phone: str | None
    languages: list[str]
    municipalities: list[str]
    service_units: list[dict[str, str]]
    approvals: list[ApprovalInForce]


def _prices_in_force(lists: Sequence[PriceList], on: date) -> dict[tuple[str, str], PriceList]:
    """(funder, category) -> the published list in force on the date (the rule of ``prices.price_in_force``)."""
    grouped: dict[tuple[str, str], list[PriceList]] = defaultdict(list)
    for p in lists:
        grouped[(p.funder_id, p.category)].append(p)
    out = {}
    for key, group in grouped.items():
        entry = prices.price_in_force([prices.PriceEntry(p.id, p.status, p.effective_from, p.published_at,
                                                         p.unit_price_cents) for p in group], on)
        if entry is not None:
            out[key] = next(p for p in group if p.id == entry.id)
    return out


def _price_json(p: PriceList | None) -> dict[str, Any] | None:
    return None if p is None else {"price_list_id": p.id, "unit": p.unit, "unit_price_cents": p.unit_price_cents,
                                   "tariffs": tariffs_of(p), "effective_from": p.effective_from.isoformat()}


async def public_provider(sessions: Sessions, provider_id: str, on: date,
                          voucher_value_cents: int | None = None) -> PublicProvider:
    """A provider as the public sees it on a date: its approvals in force (per funder and category)
    with the price in force for each (and the client's own share against a voucher's value, when one
    is given). A provider no funder has in its register then is not found."""
    async with sessions() as session:
        provider = await session.get(Provider, provider_id)
        approvals = [] if provider is None else (await session.execute(
            select(Approval, Funder.name).join(Funder, Funder.funder_id == Approval.funder_id, isouter=True)
            .where(Approval.provider_id == provider_id, approval_in_force(on))
            .order_by(Approval.funder_id, Approval.category))).all()
        if not approvals:
            raise NotFound("provider")
        lists = (await session.execute(select(PriceList).where(
            PriceList.provider_id == provider_id, PriceList.status == prices.PriceListStatus.PUBLISHED.value,
            PriceList.effective_from <= on))).scalars().all()
        units = await _unit_rows_of(session, [provider_id])
    in_force = _prices_in_force(lists, on)
    return PublicProvider(
        provider_id=provider.id, name=provider.name, business_id=provider.business_id,
        contact_email=provider.contact_email, contact_phone=provider.contact_phone,
        languages=list(provider.languages or []), municipalities=list(provider.municipalities or []),
        service_units=units[provider_id],
        approvals=[_approval_in_force(a, name, in_force.get((a.funder_id, a.category)), voucher_value_cents)
                   for a, name in approvals])


def _approval_in_force(a: Approval, funder_name: str | None, price: PriceList | None,
                       voucher_value_cents: int | None) -> ApprovalInForce:
    share = None if price is None or voucher_value_cents is None else \
        prices.own_share_per_unit(price.unit_price_cents, voucher_value_cents)
    return ApprovalInForce(funder_id=a.funder_id, funder_name=funder_name, category=a.category,
                           unit=prices.unit_of(a.category), approved_at=a.approved_at, price=_price_json(price),
                           own_share_cents_per_unit=share)


@dataclass
class PublicFunder:
    funder_id: str
    name: str
    kind: str
    #: the categories it has published a rulebook for (those it approves providers for), in code order
    categories: list[str]


async def public_funders(sessions: Sessions, page: PageParams) -> tuple[list[PublicFunder], str | None]:
    """The registered funders in the order of their codes, each with the categories it uses."""
    async with sessions() as session:
        funders, cursor = await paginate(session, select(Funder), [Funder.funder_id], page)
        used: dict[str, list[str]] = defaultdict(list)
        if funders:
            q = select(Rulebook.funder_id, Rulebook.category).where(
                Rulebook.funder_id.in_([f.funder_id for f in funders])).distinct().order_by(
                Rulebook.funder_id, Rulebook.category)
            for funder_id, category in (await session.execute(q)).all():
                used[funder_id].append(category)
    return [PublicFunder(f.funder_id, f.name, f.kind, used[f.funder_id]) for f in funders], cursor
