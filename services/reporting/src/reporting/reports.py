"""The reports' queries: each reads the read models of one funder (or of all, for operator-wide
statistics) and gives ``domain.Row``s, unsuppressed: ``linked`` chooses what is hidden over every
report of the month together. One transaction each."""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable

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


@dataclass
class Month:
    """What one funder's month (or every funder's, operator-wide) publishes about its clients, before
    suppression: the category rows and the total row, the providers' market shares, the switches in
    total and by age band. Every report of the month is built from these rows (``linked``)."""

    funder_id: str | None
    period: str
    rows: list[Row]
    total: Row
    providers: list[Row] = field(default_factory=list)
    switch_total: Row | None = None
    bands: list[Row] = field(default_factory=list)
    digest: bytes = b""  # of the figures the rows were made from (``_Raw.digest``)


def _voucher_figures(sums: dict) -> dict:
    """The voucher figures of a row from its sums. Their base is the number of vouchers: a client holds
    one voucher of a category at a time, so it is the number of clients they describe (see the README's
    note on a client with two vouchers of one category in one month)."""
    out = {name: sums.get(name, 0) for name in ("vouchers_issued", "vouchers_active", "vouchers_expired",
                                                  "vouchers_revoked", "units_granted_x100")}
    return {**out, "issued_clients": out["vouchers_issued"], "active_clients": out["vouchers_active"],
            "expired_clients": out["vouchers_expired"], "revoked_clients": out["vouchers_revoked"]}


def _add_sums(into: dict, sums: dict) -> None:
    for name, value in sums.items():
        into[name] = max(into.get(name, 0), value) if name == "worst_delay_seconds" else into.get(name, 0) + value


def _where(q: sa.Select, table: sa.Table, funder_id: str | None, periods: list[str] | None,
           funder_col: Any = None) -> sa.Select:
    if funder_id is not None:
        q = q.where((table.c.funder_id if funder_col is None else funder_col) == funder_id)
    if periods is not None:
        q = q.where(table.c.period.in_(periods))
    return q


@dataclass
class _Raw:
    """One funder's month as read: sums per category, distinct clients across categories, feedback per
    category and in total, providers per category, switches per age band (``*``: all)."""

    sums: dict[str, dict] = field(default_factory=dict)
    served: tuple[int, int] = (0, 0)
    feedback: dict[str, dict] = field(default_factory=dict)
    feedback_total: dict = field(default_factory=dict)
    providers: dict[str, list] = field(default_factory=dict)
    switches: dict[str, tuple[int, int]] = field(default_factory=dict)

    def digest(self) -> bytes:
        """What the month's cells are made of, in a stable order, as a digest: the key of its choice of
        suppression in the cache (``linked``), known before any cell is built."""
        text = repr((sorted((c, sorted(v.items())) for c, v in self.sums.items()), self.served,
                     sorted((c, sorted(v.items())) for c, v in self.feedback.items()),
                     sorted(self.feedback_total.items()),
                     sorted((c, sorted(v)) for c, v in self.providers.items()), sorted(self.switches.items())))
        return hashlib.blake2b(text.encode(), digest_size=32).digest()


async def _read_raw(s: AsyncSession, funder_id: str | None, periods: list[str] | None
                    ) -> dict[tuple[str, str], _Raw]:
    """(funder, month) -> its raw figures, for one funder (or every funder) and the months asked (or all
    its months): a query per read model, whatever the number of months."""
    raw: dict[tuple[str, str], _Raw] = defaultdict(_Raw)
    names = [c for c in CM.c.keys() if c not in ("funder_id", "period", "category")]
    for r in (await s.execute(_where(sa.select(CM), CM, funder_id, periods))).mappings():
        raw[(r["funder_id"], r["period"])].sums[r["category"]] = {n: int(r[n] or 0) for n in names}
    if periods is None:  # every month the funder has figures for (the feedback is read by month)
        periods = sorted({p for _, p in raw})
    for f, p, served, settled in (await s.execute(_where(
            sa.select(FM.c.funder_id, FM.c.period, FM.c.clients_served, FM.c.clients_settled), FM, funder_id,
            periods))).all():
        raw[(f, p)].served = (int(served), int(settled))
    q = _where(sa.select(PM.c.funder_id, PM.c.period, PM.c.category, PM.c.provider_id, PM.c.clients,
                         PM.c.charged_cents, PM.c.units_x100), PM, funder_id, periods)
    for f, p, category, provider, clients, charged, units in (await s.execute(q)).all():
        raw[(f, p)].providers.setdefault(category, []).append((provider, int(clients), int(charged or 0),
                                                                int(units or 0)))
    q = _where(sa.select(SW.c.funder_id, SW.c.period, SW.c.age_band, SW.c.switches, SW.c.clients), SW, funder_id,
               periods)
    for f, p, band, n, c in (await s.execute(q)).all():
        raw[(f, p)].switches[band] = (int(n), int(c))
    for by_category in (True, False):
        cat = V.c.category if by_category else sa.literal(TOTAL)
        q = (sa.select(V.c.funder_id, F.c.period, cat, sa.func.count(sa.distinct(V.c.client_ref)), sa.func.count(),
                       sa.func.count(sa.case((F.c.rating >= 4, 1))))
             .select_from(F.join(V, V.c.voucher_id == F.c.voucher_id)).group_by(V.c.funder_id, F.c.period, cat))
        for f, p, category, respondents, responses, satisfied in (await s.execute(
                _where(q, F, funder_id, periods, funder_col=V.c.funder_id))).all():
            found = {"respondents": respondents, "feedback_responses": responses, "satisfied": satisfied}
            if by_category:
                raw[(f, p)].feedback[category] = found
            else:
                raw[(f, p)].feedback_total = found
    return raw


def _operator_raw(parts: Iterable[_Raw]) -> _Raw:
    """Every funder's month in one: sums added (a client of two funders counts twice: a client reference
    is its funder's own), no market shares (those are each funder's)."""
    out = _Raw()
    served = [0, 0]
    for part in parts:
        for category, sums in part.sums.items():
            _add_sums(out.sums.setdefault(category, {}), sums)
        served[0] += part.served[0]
        served[1] += part.served[1]
        for category, found in part.feedback.items():
            _add_sums(out.feedback.setdefault(category, {}), found)
        _add_sums(out.feedback_total, part.feedback_total)
        for band, (n, c) in part.switches.items():
            old = out.switches.get(band, (0, 0))
            out.switches[band] = (old[0] + n, old[1] + c)
    out.served = (served[0], served[1])
    return out


def _month(funder_id: str | None, period: str, raw: _Raw, shares: bool = True) -> Month:
    """The month's rows, unsuppressed, from its raw figures (its categories: those with client figures);
    ``shares=False``: the providers' market shares left out (None) where only the cells are wanted."""
    total_sums: dict = {}
    for sums in raw.sums.values():
        _add_sums(total_sums, sums)
    categories = sorted(set(raw.sums) | set(raw.feedback) | set(raw.providers))
    rows = [_category_row(c, _voucher_figures(raw.sums.get(c, {})),
                          {"served_clients": raw.sums.get(c, {}).get("clients_served", 0),
                           "settled_clients": raw.sums.get(c, {}).get("clients_settled", 0)},
                          raw.sums.get(c, {}), raw.feedback.get(c, {}), {}, None) for c in categories]
    total = _category_row(TOTAL, _voucher_figures(total_sums),
                          {"served_clients": raw.served[0], "settled_clients": raw.served[1]}, total_sums,
                          raw.feedback_total, {}, None)
    return Month(funder_id, period, rows, total, _market_shares(raw.providers, shares), *_switches(raw.switches),
                 digest=raw.digest())


async def client_months(s: AsyncSession, funder_id: str | None, periods: list[str] | None = None,
                        shares: bool = False) -> dict[tuple[str, str], Month]:
    """(funder, month) -> its client figures as the reports publish them (before suppression): one
    funder's (or every funder's) months, those asked or all; ``shares``: with the market shares."""
    return {key: _month(key[0], key[1], raw, shares)
            for key, raw in sorted((await _read_raw(s, funder_id, periods)).items())}


async def operator_month(s: AsyncSession, period: str) -> tuple[Month, dict[str, Month]]:
    """Every funder's month in one (the operator's statistics), and each funder's own."""
    raw = await _read_raw(s, None, [period])
    funders = {f: _month(f, p, r, shares=False) for (f, p), r in sorted(raw.items())}
    return _month(None, period, _operator_raw(raw.values())), funders


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


async def client_month(s: AsyncSession, funder_id: str, p: Period, shares: bool = True) -> Month:
    """A funder's month (empty rows for a month it has no figures of)."""
    found = (await client_months(s, funder_id, [str(p)], shares)).get((funder_id, str(p)))
    return found or _month(funder_id, str(p), _Raw())


async def add_provider_figures(s: AsyncSession, m: Month, p: Period) -> None:
    """Providers approved and suspended, and list prices, in the month's rows (they describe no client:
    never suppressed), with rows for the categories that have only those."""
    states = domain.approval_states(await _approvals(s, m.funder_id), p.last)
    providers = domain.providers_by_state(states)
    prices = domain.average_list_prices(domain.prices_in_force(await _price_lists(s, m.funder_id), p.last)) \
        if m.funder_id is not None else {}
    known = {r.key["category"] for r in m.rows}
    m.rows = sorted(m.rows + [_category_row(c, {}, {}, {}, {}, {}, None) for c in set(providers) | set(prices)
                              if c not in known], key=lambda r: r.key["category"])
    for r in m.rows:
        _provider_figures(r, providers.get(r.key["category"], {}), prices.get(r.key["category"]))
    approved = {pr for _, pr, st in states.values() if st in ("approved", "reinstated")}
    suspended = {pr for _, pr, st in states.values() if st == "suspended"}
    _provider_figures(m.total, {"approved": len(approved), "suspended": len(suspended)}, None)


def _provider_figures(row: Row, providers: dict, prices: tuple | None) -> None:
    row.values.update(providers_approved=providers.get("approved", 0),
                      providers_suspended=providers.get("suspended", 0), providers_with_prices=prices[0] if prices else 0,
                      average_list_price_cents=prices[1] if prices else None)


def _market_shares(by_cat: dict[str, list], shares: bool = True) -> list[Row]:
    """Per category and provider: clients, charged euros and the share of the category's. A provider's
    clients are its vouchers with charges in the month (a client holds one voucher of a category)."""
    out = []
    for category, providers in sorted(by_cat.items()):
        whole = sum(x[2] for x in providers)
        out += [Row({"category": category, "provider_id": prov},
                    {"clients": clients, "charged_cents": charged, "units": from_hundredths(units),
                     "market_share": share(charged, whole) if shares else None},
                    {"clients": clients, "charged_cents": clients, "units": clients, "market_share": clients})
                for prov, clients, charged, units in sorted(providers, key=lambda x: (-x[2], x[0]))]
    return out


def _switches(found: dict[str, tuple[int, int]]) -> tuple[Row, list[Row]]:
    """Provider switches in the month (choices naming a previous provider): how many clients switched,
    by age band (the voucher's ``age_band``; ``unknown`` where the decision gave none or reporting has not
    seen the voucher's issue). The fold keeps the counts (``reporting_switch_month``); operator-wide they
    are summed over funders (a client reference is a funder's own)."""
    found = dict(found)
    n, c = found.pop("*", (0, 0))
    bands = [Row({"age_band": b}, {"switches": bn, "clients": bc}, {"switches": bc, "clients": bc})
             for b, (bn, bc) in sorted(found.items())]
    return Row({"age_band": TOTAL}, {"switches": n, "clients": c}, {"switches": c, "clients": c}), bands


async def price_development(s: AsyncSession, funder_id: str, category: str | None) -> list[Row]:
    """Per period (month) and category: providers with a price list in force at the month's end, their
    average, lowest and highest price per unit, and the price weighted by the units charged. Unsuppressed:
    its client figures are the monthly report's cells and take their suppression (``linked``)."""
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
            rows.append(Row({"period": str(p), "category": cat},
                            {"providers": n, "average_price_cents": avg,
                             "average_price_eur": domain.cents_to_euros(avg),
                             "lowest_price_cents": low, "highest_price_cents": high,
                             "charged_units": from_hundredths(units),
                             "unit_weighted_price_cents": domain.average_cents(priced, units),
                             "clients_charged": clients},
                            {"charged_units": clients, "unit_weighted_price_cents": clients,
                             "clients_charged": clients}))
    return rows


async def providers_with_prices(s: AsyncSession, funder_id: str, category: str | None,
                                periods: Iterable[str]) -> dict[str, int]:
    """month -> the providers with a price list in force at its end in the category (or in any category:
    a provider with prices for two categories is one provider, not two). The price chart says this
    number; it once said the last category's count for all categories (5 where 45 had a price)."""
    lists = await _price_lists(s, funder_id, category)
    return {p: len({provider for (_, provider) in domain.prices_in_force(lists, Period.parse(p).last)})
            for p in periods}


def monthly_volume(months: dict[tuple[str, str], Month]) -> list[Row]:
    """Per month with charges: euros charged, the clients' own shares and the volume with them: the
    month's total row's figures (and its suppression, ``linked``)."""
    rows = []
    for (_, period), m in sorted(months.items()):
        if not m.total.values["charges"]:
            continue
        rows.append(Row({"period": period}, {n: m.total.values[n] for n in VOLUME},
                        {n: m.total.bases[n] for n in VOLUME}))
    return rows


VOLUME = ("charged_cents", "own_share_cents", "volume_cents")
