"""The reports' queries: each reads the read models of one funder (or of all, for operator-wide
statistics) and gives ``domain.Row``s, suppressed by the rule in ``domain``. One transaction each."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared.money import from_hundredths

from . import domain
from .domain import Period, Row, share
from .models import (ApprovalChange, CategoryMonth, Feedback, FunderMonth, PriceListFact, ProviderChoice, ProviderMonth,
                     SwitchMonth, VoucherFact)

V, CM, F, C, FM, PM = (VoucherFact.__table__, CategoryMonth.__table__, Feedback.__table__, ProviderChoice.__table__,
                       FunderMonth.__table__, ProviderMonth.__table__)
SW = SwitchMonth.__table__
TOTAL = "total"

#: the category row's figures and which base (distinct clients) each describes; None: no client
FIGURES: dict[str, str | None] = {
    "vouchers_issued": "issued_clients", "vouchers_active": "active_clients",
    "vouchers_expired": "expired_clients", "vouchers_revoked": "revoked_clients",
    "clients_served": "served_clients", "units_granted": "active_clients", "units_used": "served_clients",
    "utilisation": "utilisation_clients", "charges": "served_clients", "charged_cents": "served_clients",
    "own_share_cents": "served_clients", "volume_cents": "served_clients",
    "average_charged_price_cents": "served_clients",
    "settled_charges": "settled_clients", "settled_gross_cents": "settled_clients", "fee_cents": "settled_clients",
    "net_cents": "settled_clients", "settled_within_14_days_share": "settled_clients",
    "worst_settlement_delay_days": "settled_clients",
    "feedback_responses": "respondents", "satisfied_share": "respondents", "response_rate": "respondents",
    "providers_approved": None, "providers_suspended": None, "providers_with_prices": None,
    "average_list_price_cents": None,
}
ADDITIVE = ("vouchers_issued", "vouchers_active", "vouchers_expired", "vouchers_revoked", "clients_served",
            "units_granted", "units_used", "charges", "charged_cents", "own_share_cents", "volume_cents",
            "settled_charges", "settled_gross_cents", "fee_cents", "net_cents", "feedback_responses")


def _client(v: sa.Table = V, voucher_col: Any = None) -> Any:
    """The client a row is about: its pseudonymous reference, or its voucher while reporting has not yet
    seen the voucher's issue (a charge may arrive first)."""
    return sa.func.coalesce(v.c.client_ref, sa.literal("voucher:") + voucher_col)


def _group(col: Any, by_category: bool) -> Any:
    return col if by_category else sa.literal(TOTAL)


def _voucher_figures(sums: dict) -> dict:
    """The voucher figures of a row from its sums. Their base is the number of vouchers: a client holds
    one voucher of a category at a time, so it is the number of clients they describe (see the README's
    note on a client with two vouchers of one category in one month)."""
    out = {name: sums.get(name, 0) for name in ("vouchers_issued", "vouchers_active", "vouchers_expired",
                                                  "vouchers_revoked", "units_granted_x100")}
    return {**out, "issued_clients": out["vouchers_issued"], "active_clients": out["vouchers_active"],
            "expired_clients": out["vouchers_expired"], "revoked_clients": out["vouchers_revoked"]}


async def _usage_figures(s: AsyncSession, funder_id: str | None, p: Period, by_category: bool, sums: dict
                        ) -> dict[str, dict]:
    """Distinct clients with charges and with settled charges: per category and, across categories (a
    client may use several), per funder and month, both kept by the fold. Operator-wide, a client of two
    funders counts twice (their references are the funders' own)."""
    if by_category:
        return {c: {"served_clients": v.get("clients_served", 0), "settled_clients": v.get("clients_settled", 0)}
                for c, v in sums.items()}
    q = sa.select(sa.func.sum(FM.c.clients_served), sa.func.sum(FM.c.clients_settled)).where(FM.c.period == str(p))
    if funder_id is not None:
        q = q.where(FM.c.funder_id == funder_id)
    served, settled = (await s.execute(q)).one()
    return {TOTAL: {"served_clients": int(served or 0), "settled_clients": int(settled or 0)}}


async def _sums(s: AsyncSession, funder_id: str | None, p: Period, by_category: bool) -> dict[str, dict]:
    cat = _group(CM.c.category, by_category).label("category")
    names = [c for c in CM.c.keys() if c not in ("funder_id", "period", "category")]
    cols = [(sa.func.max if n == "worst_delay_seconds" else sa.func.sum)(CM.c[n]) for n in names]
    q = sa.select(cat, *cols).where(CM.c.period == str(p)).group_by(cat)
    if funder_id is not None:
        q = q.where(CM.c.funder_id == funder_id)
    return {r[0]: {n: int(v or 0) for n, v in zip(names, r[1:])} for r in (await s.execute(q)).all()}


async def _feedback(s: AsyncSession, funder_id: str | None, p: Period, by_category: bool) -> dict[str, dict]:
    cat = _group(V.c.category, by_category).label("category")
    q = (sa.select(cat, sa.func.count(sa.distinct(V.c.client_ref)), sa.func.count(),
                   sa.func.count(sa.case((F.c.rating >= 4, 1))))
         .select_from(F.join(V, V.c.voucher_id == F.c.voucher_id)).where(F.c.period == str(p)).group_by(cat))
    if funder_id is not None:
        q = q.where(V.c.funder_id == funder_id)
    return {r[0]: {"respondents": r[1], "feedback_responses": r[2], "satisfied": r[3]}
            for r in (await s.execute(q)).all()}


async def _approvals(s: AsyncSession, funder_id: str | None) -> list[domain.Change]:
    A = ApprovalChange.__table__
    q = sa.select(A.c.approval_id, A.c.provider_id, A.c.category, A.c.kind, A.c.effective_from, A.c.at)
    if funder_id is not None:
        q = q.where(A.c.funder_id == funder_id)
    return [domain.Change(*r) for r in (await s.execute(q)).all()]


async def _price_lists(s: AsyncSession, funder_id: str, category: str | None = None) -> list[domain.PriceList]:
    P = PriceListFact.__table__
    q = sa.select(P.c.provider_id, P.c.category, P.c.unit_price_cents, P.c.effective_from, P.c.published_at) \
        .where(P.c.funder_id == funder_id)
    if category is not None:
        q = q.where(P.c.category == category)
    return [domain.PriceList(*r) for r in (await s.execute(q)).all()]


def _category_row(category: str, vf: dict, us: dict, sm: dict, fb: dict, providers: dict, prices: tuple | None
                  ) -> Row:
    served, active = us.get("served_clients", 0), vf.get("active_clients", 0)
    granted, used = vf.get("units_granted_x100", 0), sm.get("units_x100", 0)
    settled = sm.get("settled_charges", 0)
    values = {
        "vouchers_issued": vf.get("vouchers_issued", 0), "vouchers_active": vf.get("vouchers_active", 0),
        "vouchers_expired": vf.get("vouchers_expired", 0), "vouchers_revoked": vf.get("vouchers_revoked", 0),
        "clients_served": served, "units_granted": from_hundredths(granted), "units_used": from_hundredths(used),
        "utilisation": share(used, granted), "charges": sm.get("charges", 0),
        "charged_cents": sm.get("charged_cents", 0), "own_share_cents": sm.get("own_share_cents", 0),
        "volume_cents": sm.get("charged_cents", 0) + sm.get("own_share_cents", 0),
        "average_charged_price_cents": domain.average_cents(sm.get("priced_x100", 0), used),
        "settled_charges": settled, "settled_gross_cents": sm.get("settled_gross_cents", 0),
        "fee_cents": sm.get("fee_cents", 0), "net_cents": sm.get("net_cents", 0),
        "settled_within_14_days_share": share(sm.get("settled_within_14_days", 0), settled),
        "worst_settlement_delay_days": (Decimal(sm.get("worst_delay_seconds", 0)) / 86400).quantize(Decimal("0.1"))
        if settled else None,
        "feedback_responses": fb.get("feedback_responses", 0),
        "satisfied_share": share(fb.get("satisfied", 0), fb.get("feedback_responses", 0)),
        "response_rate": share(fb.get("respondents", 0), active),
        "providers_approved": providers.get("approved", 0), "providers_suspended": providers.get("suspended", 0),
        "providers_with_prices": prices[0] if prices else 0,
        "average_list_price_cents": prices[1] if prices else None,
    }
    bases = {**vf, **us, "respondents": fb.get("respondents", 0),
             "utilisation_clients": min(served, active) if served and active else max(served, active)}
    return Row({"category": category}, values,
               {name: int(bases.get(base, 0)) for name, base in FIGURES.items() if base is not None})


async def monthly_rows(s: AsyncSession, funder_id: str | None, p: Period) -> tuple[list[Row], Row]:
    """The category rows and the total row of a funder's month (``None``: every funder's, operator-wide)."""
    parts = []
    for by_category in (True, False):
        sums = await _sums(s, funder_id, p, by_category)
        parts.append([{k: _voucher_figures(v) for k, v in sums.items()},
                      await _usage_figures(s, funder_id, p, by_category, sums), sums,
                      await _feedback(s, funder_id, p, by_category)])
    states = domain.approval_states(await _approvals(s, funder_id), p.last)
    providers = domain.providers_by_state(states)
    prices = domain.average_list_prices(domain.prices_in_force(await _price_lists(s, funder_id), p.last)) \
        if funder_id is not None else {}
    categories = sorted(set().union(*[set(x) for x in parts[0]], providers, prices))
    rows = [_category_row(c, *[x.get(c, {}) for x in parts[0]], providers.get(c, {}), prices.get(c))
            for c in categories]
    total_providers = {"approved": len({pr for _, pr, st in states.values() if st in ("approved", "reinstated")}),
                       "suspended": len({pr for _, pr, st in states.values() if st == "suspended"})}
    total = _category_row(TOTAL, *[x.get(TOTAL, {}) for x in parts[1]], total_providers, None)
    domain.suppress(rows, ADDITIVE, total)
    return rows, total


async def market_shares(s: AsyncSession, funder_id: str, p: Period) -> list[Row]:
    """Per category and provider: clients, charged euros and the share of the category's. A provider's
    clients are its vouchers with charges in the month (a client holds one voucher of a category)."""
    q = (sa.select(PM.c.category, PM.c.provider_id, PM.c.clients, PM.c.charged_cents, PM.c.units_x100)
         .where(PM.c.funder_id == funder_id, PM.c.period == str(p)))
    by_cat: dict[str, list] = {}
    for category, provider, clients, charged, units in (await s.execute(q)).all():
        by_cat.setdefault(category, []).append((provider, int(clients), int(charged or 0), int(units or 0)))
    out = []
    for category, providers in sorted(by_cat.items()):
        whole = sum(x[2] for x in providers)
        rows = [Row({"category": category, "provider_id": prov},
                    {"clients": clients, "charged_cents": charged, "units": from_hundredths(units),
                     "market_share": share(charged, whole)},
                    {"clients": clients, "charged_cents": clients, "units": clients, "market_share": clients})
                for prov, clients, charged, units in sorted(providers, key=lambda x: (-x[2], x[0]))]
        # the category's total is shown in the category row (and suppressed there by its own base)
        domain.suppress(rows, ("clients", "charged_cents", "units", "market_share"))
        out += rows
    return out


async def switches(s: AsyncSession, funder_id: str | None, p: Period) -> tuple[Row, list[Row]]:
    """Provider switches in the month (choices naming a previous provider): how many clients switched,
    by age band (the voucher's ``age_band``; ``unknown`` where the decision gave none or reporting has not
    seen the voucher's issue). The fold keeps the counts (``reporting_switch_month``); operator-wide they
    are summed over funders (a client reference is a funder's own)."""
    q = sa.select(SW.c.age_band, sa.func.sum(SW.c.switches), sa.func.sum(SW.c.clients)).where(
        SW.c.period == str(p)).group_by(SW.c.age_band)
    if funder_id is not None:
        q = q.where(SW.c.funder_id == funder_id)
    found = {b: (int(n), int(c)) for b, n, c in (await s.execute(q)).all()}
    n, c = found.pop("*", (0, 0))
    bands = [Row({"age_band": b}, {"switches": bn, "clients": bc}, {"switches": bc, "clients": bc})
             for b, (bn, bc) in sorted(found.items())]
    total = Row({"age_band": TOTAL}, {"switches": n, "clients": c}, {"switches": c, "clients": c})
    domain.suppress(bands, ("switches", "clients"), total)
    return total, bands


async def price_development(s: AsyncSession, funder_id: str, category: str | None) -> list[Row]:
    """Per period (month) and category: providers with a price list in force at the month's end, their
    average, lowest and highest price per unit, and the price weighted by the units charged."""
    lists = await _price_lists(s, funder_id, category)
    q = (sa.select(CM.c.period, CM.c.category, CM.c.units_x100, CM.c.priced_x100, CM.c.clients_served)
         .where(CM.c.funder_id == funder_id, CM.c.charges > 0))
    if category is not None:
        q = q.where(CM.c.category == category)
    found = (await s.execute(q)).all()
    charged = {(r[0], r[1]): (int(r[2]), int(r[3])) for r in found}
    served = {(r[0], r[1]): int(r[4]) for r in found}
    months = [Period.of(pl.effective_from) for pl in lists] + [Period.parse(k[0]) for k in charged]
    if not months:
        return []
    first, last = min(months, key=lambda m: (m.year, m.month)), max(months, key=lambda m: (m.year, m.month))
    rows = []
    for p in domain.periods_between(first, last):
        averages = domain.average_list_prices(domain.prices_in_force(lists, p.last))
        for cat in sorted(set(averages) | {c for (per, c) in charged if per == str(p)}):
            n, avg, low, high = averages.get(cat, (0, None, None, None))
            units, priced = charged.get((str(p), cat), (0, 0))
            clients = served.get((str(p), cat), 0)
            row = Row({"period": str(p), "category": cat},
                      {"providers": n, "average_price_cents": avg, "average_price_eur": domain.cents_to_euros(avg),
                       "lowest_price_cents": low, "highest_price_cents": high,
                       "charged_units": from_hundredths(units),
                       "unit_weighted_price_cents": domain.average_cents(priced, units),
                       "clients_charged": clients},
                      {"charged_units": clients, "unit_weighted_price_cents": clients, "clients_charged": clients})
            row.primary()
            rows.append(row)
    return rows


async def monthly_volume(s: AsyncSession, funder_id: str) -> list[Row]:
    """Per month: euros charged (with the clients' own shares). The month is suppressed unless one of its
    categories alone has 5 clients or more (a lower bound of the month's distinct clients: never shows
    a month of fewer than 5 clients)."""
    q = (sa.select(CM.c.period, sa.func.sum(CM.c.charged_cents), sa.func.sum(CM.c.own_share_cents),
                   sa.func.max(CM.c.clients_served))
         .where(CM.c.funder_id == funder_id, CM.c.charges > 0).group_by(CM.c.period).order_by(CM.c.period))
    rows = []
    for period, charged, own, clients in (await s.execute(q)).all():
        n = int(clients or 0)
        base = n if n >= domain.MIN_CLIENTS else 1  # below 5 in every category: treated as fewer than 5
        row = Row({"period": period}, {"charged_cents": int(charged or 0), "own_share_cents": int(own or 0),
                                       "volume_cents": int(charged or 0) + int(own or 0)},
                  {"charged_cents": base, "own_share_cents": base, "volume_cents": base})
        row.primary()
        rows.append(row)
    return rows
