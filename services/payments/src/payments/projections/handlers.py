"""Projections payments keeps of other services' facts, built only from their events: vouchers (terms,
kinds, codes, choices, revocations), funders' contract terms, approvals, price lists and providers."""
from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key

from seteli_shared.approvals import ApprovalProjection, as_utc
from seteli_shared.errors import PermanentMessageError
from seteli_shared.events import (Envelope, FunderRegistered, FunderTermsChanged, PriceListPublished, VoucherAmended,
                                  VoucherIssued, VoucherProviderChosen, VoucherRevoked, VouchersIssued)
from seteli_shared.money import to_hundredths

from ..models import ApprovalView, FunderView, PriceListView, ProviderChoiceView, VoucherView
from ..settlement.figures import fee_rate_in_range
from . import providers


async def _funder_terms(session: AsyncSession, funder_id: str, rate: Decimal, deadline_days: int | None,
                       at: datetime) -> None:
    """The funder's contract terms that settlement and intake use (its fee rate, its charging deadline),
    as of ``at``: terms older than those held change nothing (a registration heard after a change)."""
    if not fee_rate_in_range(rate):
        raise PermanentMessageError("operator_fee_rate_out_of_range")
    if deadline_days is not None and not 1 <= deadline_days <= 3650:
        raise PermanentMessageError("charge_deadline_days_out_of_range")
    at = as_utc(at)
    view = await session.get(FunderView, funder_id, with_for_update=True)
    if view is None:
        view = FunderView(funder_id=funder_id, operator_fee_rate="0")
    elif view.terms_at is not None and as_utc(view.terms_at) > at:
        return
    view.operator_fee_rate, view.charge_deadline_days, view.terms_at = format(rate, "f"), deadline_days, at
    session.add(view)
    await session.flush()


async def on_funder_registered(session: AsyncSession, _env: Envelope, event: FunderRegistered) -> None:
    await _funder_terms(session, event.funder_id, event.operator_fee_rate, event.charge_deadline_days,
                        event.registered_at)
    view = await session.get(FunderView, event.funder_id, with_for_update=True)
    if view is not None and view.name != event.name[:200]:  # its invoices' buyer
        view.name = event.name[:200]
        session.add(view)
        await session.flush()


async def on_funder_terms_changed(session: AsyncSession, _env: Envelope, event: FunderTermsChanged) -> None:
    await _funder_terms(session, event.funder_id, event.operator_fee_rate, event.charge_deadline_days,
                        event.changed_at)


# ------------------------------------------------------------------ approvals and their life cycle
#: the approval projection on payments' own table, folded by the code vouchers' is folded by (``seteli_shared``)
APPROVALS = ApprovalProjection(ApprovalView)


# ------------------------------------------------------------------ price lists
async def on_price_list_published(session: AsyncSession, _env: Envelope, event: PriceListPublished) -> None:
    """Every published list is kept (the history decides the price on each service date); a list is
    never changed once published, so one heard of again changes nothing."""
    if event.unit_price_cents <= 0 or any(not isinstance(v, int) or v <= 0 for v in event.tariffs.values()):
        raise PermanentMessageError("price_not_positive")
    if await session.get(PriceListView, event.price_list_id) is not None:
        return
    session.add(PriceListView(
        price_list_id=event.price_list_id, provider_id=event.provider_id, funder_id=event.funder_id,
        category=event.category, unit=event.unit, unit_price_cents=event.unit_price_cents,
        tariffs=dict(event.tariffs), effective_from=event.effective_from, published_at=as_utc(event.published_at)))
    await session.flush()


async def _voucher(session: AsyncSession, voucher_id: str, funder_id: str, category: str) -> VoucherView:
    view = await session.get(VoucherView, voucher_id)
    if view is None:
        view = VoucherView(voucher_id=voucher_id, funder_id=funder_id, category=category)
        session.add(view)
    return view


async def on_voucher_issued(session: AsyncSession, _env: Envelope, event: VoucherIssued) -> None:
    view = await _voucher(session, event.voucher_id, event.funder_id, event.category)
    view.issued = True
    # the kind and its terms (an amendment never changes the kind; budget and fee come only from here)
    view.kind = event.kind or "service_voucher"
    view.budget_cents, view.categories = event.budget_cents, event.categories
    view.max_value_per_unit_cents, view.client_fee_cents = event.max_value_per_unit_cents, event.client_fee_cents
    view.value_table_version = event.value_table_version
    if event.voucher_code is not None:
        view.voucher_code = event.voucher_code
    if view.decision_version is not None:
        await session.flush()
        return  # an amendment arrived first: its terms are newer
    view.units_per_period_x100 = to_hundredths(event.units_per_period)
    view.period = event.period
    view.value_per_unit_cents = event.value_per_unit_cents
    view.valid_from = event.valid_from
    view.valid_until = event.valid_until
    view.carry_over = event.carry_over
    await session.flush()


#: the columns ``VoucherIssued`` writes: the kind's terms always, the code when it has one, the decision's
#: terms only while no amendment is held (``on_voucher_issued``)
_ISSUED_ALWAYS = ("kind", "budget_cents", "categories", "max_value_per_unit_cents", "client_fee_cents",
                  "value_table_version")
_ISSUED_TERMS = ("units_per_period_x100", "period", "value_per_unit_cents", "valid_from", "valid_until", "carry_over")
_PG_ARRAYS = {"voucher_id": "text[]", "funder_id": "text[]", "category": "text[]", "issued": "boolean[]",
              "kind": "text[]", "budget_cents": "bigint[]", "categories": "text[]",
              "max_value_per_unit_cents": "bigint[]", "client_fee_cents": "bigint[]", "value_table_version": "text[]",
              "voucher_code": "text[]", "units_per_period_x100": "bigint[]", "period": "text[]",
              "value_per_unit_cents": "bigint[]", "valid_from": "date[]", "valid_until": "date[]",
              "carry_over": "boolean[]"}
_SQLITE_CHUNK = 50  # rows per INSERT (17 parameters each; SQLite's limit is 32,766 but small is fine here)


def _issued_rows(items: list[tuple[Envelope, VoucherIssued]]) -> list[dict[str, Any]]:
    """One row per voucher, as ``on_voucher_issued`` applied to each event in turn would leave its columns:
    the last event's values, except the code, which is the last one given (None keeps the held one)."""
    rows: dict[str, dict[str, Any]] = {}
    for _env, e in items:
        row = {"voucher_id": e.voucher_id, "funder_id": e.funder_id, "category": e.category, "issued": True,
               "kind": e.kind or "service_voucher", "budget_cents": e.budget_cents,
               "categories": None if e.categories is None else list(e.categories),
               "max_value_per_unit_cents": e.max_value_per_unit_cents, "client_fee_cents": e.client_fee_cents,
               "value_table_version": e.value_table_version, "voucher_code": e.voucher_code,
               "units_per_period_x100": to_hundredths(e.units_per_period), "period": e.period,
               "value_per_unit_cents": e.value_per_unit_cents, "valid_from": e.valid_from,
               "valid_until": e.valid_until, "carry_over": e.carry_over}
        held = rows.get(e.voucher_id)
        if held is not None:
            # the row the first event created keeps its funder and category (as the single handler's would)
            row["funder_id"], row["category"] = held["funder_id"], held["category"]
            if row["voucher_code"] is None:
                row["voucher_code"] = held["voucher_code"]
        rows[e.voucher_id] = row
    return list(rows.values())


def _issued_set(table: sa.Table, excluded: Any) -> dict[str, Any]:
    """ON CONFLICT's SET: what ``on_voucher_issued`` changes on a row that is there (funder and category stay)."""
    held_amendment = table.c.decision_version.is_not(None)
    return {"issued": sa.true(),
            **{n: excluded[n] for n in _ISSUED_ALWAYS},
            "voucher_code": sa.func.coalesce(excluded.voucher_code, table.c.voucher_code),
            **{n: sa.case((held_amendment, table.c[n]), else_=excluded[n]) for n in _ISSUED_TERMS}}


async def on_vouchers_issued(session: AsyncSession, items: list[tuple[Envelope, VoucherIssued]]) -> None:
    """A run of ``VoucherIssued`` in one set-based upsert (PostgreSQL: one ``INSERT ... SELECT unnest``), with
    the rows ``on_voucher_issued`` would leave event by event: either order with choices and amendments (an
    amendment's terms stay), a code kept when an event has none, a voucher twice in the run folded in order."""
    if len(items) == 1:
        await on_voucher_issued(session, *items[0])
        return
    rows = _issued_rows(items)
    table = VoucherView.__table__
    await session.flush()
    if session.bind.dialect.name == "postgresql":
        names = list(_PG_ARRAYS)
        params = {f"c{i}": [r[n] for r in rows] for i, n in enumerate(names)}
        params[f"c{names.index('categories')}"] = [None if r["categories"] is None else json.dumps(r["categories"])
                                                   for r in rows]
        arrays = ", ".join(f"CAST(:c{i} AS {_PG_ARRAYS[n]})" for i, n in enumerate(names))
        cols = ", ".join(f"c{i}" for i in range(len(names)))
        source = sa.select(*[sa.literal_column(f"x.c{i}" + ("::json" if n == "categories" else ""))
                             for i, n in enumerate(names)]).select_from(
            sa.text(f"unnest({arrays}) AS x({cols})").bindparams(**params))
        stmt = postgresql.insert(table).from_select(names, source)
        await session.execute(stmt.on_conflict_do_update(index_elements=["voucher_id"],
                                                         set_=_issued_set(table, stmt.excluded)))
    else:
        for i in range(0, len(rows), _SQLITE_CHUNK):
            stmt = sqlite.insert(table).values(rows[i:i + _SQLITE_CHUNK])
            await session.execute(stmt.on_conflict_do_update(index_elements=["voucher_id"],
                                                             set_=_issued_set(table, stmt.excluded)))
    # rows this session holds are stale now: the next handler reads them afresh
    for voucher_id in {r["voucher_id"] for r in rows}:
        held = session.identity_map.get(identity_key(VoucherView, voucher_id))
        if held is not None:
            session.expunge(held)


async def on_vouchers_issued_v2(session: AsyncSession, items: list[tuple[Envelope, VouchersIssued]]) -> None:
    """A run of ``VouchersIssued`` (``voucher.issued.v2``): each voucher listed folded as its ``VoucherIssued``,
    all of the run's in one upsert (``on_vouchers_issued``), so a voucher heard in both versions, or a v2 event
    redelivered, leaves the rows one ``VoucherIssued`` leaves."""
    each = [(env, one) for env, event in items for one in event.each()]
    if each:
        await on_vouchers_issued(session, each)


async def on_voucher_amended(session: AsyncSession, _env: Envelope, event: VoucherAmended) -> None:
    """A later decision's terms replace older ones (events may come in any order: the highest version wins)."""
    view = await _voucher(session, event.voucher_id, event.funder_id, event.category)
    if view.decision_version is not None and event.decision_version <= view.decision_version:
        return
    view.decision_version = event.decision_version
    view.units_per_period_x100 = to_hundredths(event.units_per_period)
    view.period, view.value_per_unit_cents = event.period, event.value_per_unit_cents
    view.valid_from, view.valid_until = event.valid_from, event.valid_until
    view.carry_over = event.carry_over
    await session.flush()


async def on_voucher_revoked(session: AsyncSession, _env: Envelope, event: VoucherRevoked) -> None:
    """Kept for the charging rules (services before ``revoked_from`` stay chargeable within a grace)."""
    view = await _voucher(session, event.voucher_id, event.funder_id, event.category)
    if view.revoked_from is None or event.effective_from < view.revoked_from:
        view.revoked_at, view.revoked_from = event.revoked_at, event.effective_from
    await session.flush()


async def on_provider_chosen(session: AsyncSession, _env: Envelope, event: VoucherProviderChosen) -> None:
    view = await _voucher(session, event.voucher_id, event.funder_id, event.category)
    # events may be redelivered out of order: the latest choice wins
    if view.provider_chosen_at is None or event.chosen_at >= view.provider_chosen_at:
        view.provider_id = event.provider_id
        view.provider_chosen_at = event.chosen_at
    # and every choice is kept with the first service date it covers (lifecycle.provider_on)
    key = (event.voucher_id, as_utc(event.chosen_at), event.provider_id)
    if await session.get(ProviderChoiceView, key) is None:
        session.add(ProviderChoiceView(voucher_id=event.voucher_id, chosen_at=key[1], provider_id=event.provider_id,
                                       effective_from=event.effective_from or as_utc(event.chosen_at).date()))
    await session.flush()


HANDLERS = {
    FunderRegistered.event_type(): on_funder_registered,
    FunderTermsChanged.event_type(): on_funder_terms_changed,
    **APPROVALS.handlers(),
    PriceListPublished.event_type(): on_price_list_published,
    VoucherIssued.event_type(): on_voucher_issued,
    VoucherProviderChosen.event_type(): on_provider_chosen,
    VoucherAmended.event_type(): on_voucher_amended,
    VoucherRevoked.event_type(): on_voucher_revoked,
    **providers.HANDLERS,
}
#: runs of these events folded at once (the consumer's ``batch_handlers``; the same rows as ``HANDLERS``')
BATCH_HANDLERS = {
    VoucherIssued.event_type(): on_vouchers_issued,
    VouchersIssued.event_type(): on_vouchers_issued_v2,
}
