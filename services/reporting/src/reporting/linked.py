"""The linked tables of a month: which published figures are the same cell, which add up to which,
and the suppression chosen over all of them (``disclosure``) applied to every report and form.

**What is one set.** Everything a role can read about one funder's month: the monthly report's
category rows and total row, its providers' market shares and its switches by age band, in JSON and CSV;
the price development's row of each category for that month (``charged_units`` and ``clients_charged``
are the category row's ``units_used`` and ``clients_served``, its weighted price is the row's average
charged price); the monthly-volume chart's month (the total row's euros). For the operator, also every
funder's set and the statistics across funders, whose cells are the sums of the funders' cells.

**The relations** (each ``total = sum(parts)``, see ``disclosure``), per funder and month:

- total row = sum of the category rows, for every additive figure (vouchers, units, charges, euros);
  ``clients_served``: distinct clients, the total at most the sum (and at least each category);
- a category's ``charged_cents`` and ``units_used`` = the sums of its providers' (market shares);
  its ``clients_served`` at most the sum of its providers' clients (a provider's are its vouchers);
- in every row, ``volume_cents`` = ``charged_cents`` + ``own_share_cents`` and
  ``settled_gross_cents`` = ``net_cents`` + ``fee_cents``;
- switches in total = the sum of the age bands' (the clients: distinct, at most the sum);
- operator-wide: each statistics cell = the sum of the funders' same cells (a client reference is its
  funder's own, so clients add up across funders).

Ratios (utilisation, average prices, shares, the worst delay) are not cells: each is hidden wherever a
figure of its row it is computed from is hidden (``TIES``), and a category's market shares wherever its
charged euros are hidden (with the providers' euros shown, shares would give the category's back).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from seteli_shared.logging import get_logger

from . import disclosure
from .disclosure import AMOUNT, CLIENTS, Cell, Key, Relation, Tables
from .domain import Row, needs_suppression
from .reports import ADDITIVE, Month

log = get_logger(__name__)

CLIENT_COUNTS = {"vouchers_issued", "vouchers_active", "vouchers_expired", "vouchers_revoked", "clients_served",
                 "feedback_responses"}
HUNDREDTHS = {"units_granted", "units_used", "units"}  # cells hold hundredths of a unit
DISTINCT = {"clients_served"}
IDENTITIES = (("volume_cents", ("charged_cents", "own_share_cents")),
              ("settled_gross_cents", ("net_cents", "fee_cents")))
#: provider figure -> (the category row's figure it adds up to, distinct clients)
PROVIDER_SUMS = {"clients": ("clients_served", True), "charged_cents": ("charged_cents", False),
                 "units": ("units_used", False)}
#: a ratio of a category row -> the row's figures it is computed from
TIES = {"utilisation": ("units_used", "units_granted"), "average_charged_price_cents": ("units_used",),
        "settled_within_14_days_share": ("settled_charges",), "worst_settlement_delay_days": ("settled_charges",),
        "satisfied_share": ("feedback_responses",), "response_rate": ("feedback_responses", "vouchers_active")}
#: the price development's figures -> the category row's cell they are
PRICE_CELLS = {"charged_units": "units_used", "clients_charged": "clients_served",
               "unit_weighted_price_cents": "average_charged_price_cents"}


ALL_FUNDERS = "*"  # the first part of a statistics cell's key (a funder's cells begin with its id)


def _keys(m: Month) -> dict[str, list[tuple[Key, Row, str]]]:
    """The month's cells by table: (key, row, figure); a key begins with the month's funder."""
    f = m.funder_id or ALL_FUNDERS
    out: dict[str, list] = {"category": [], "provider": [], "switches": []}
    for r in m.rows:
        out["category"] += [((f, "category", r.key["category"], n), r, n) for n in ADDITIVE]
    out["category"] += [((f, "total", n), m.total, n) for n in ADDITIVE]
    for r in m.providers:
        out["provider"] += [((f, "provider", r.key["category"], r.key["provider_id"], n), r, n) for n in PROVIDER_SUMS]
    if m.switch_total is not None:
        out["switches"] += [((f, "switches", n), m.switch_total, n) for n in ("switches", "clients")]
        for b in m.bands:
            out["switches"] += [((f, "age_band", b.key["age_band"], n), b, n) for n in ("switches", "clients")]
    return out


_KIND = {f: CLIENTS for f in (*CLIENT_COUNTS, "clients")}


def tables(m: Month) -> Tables:
    """The month's cells and relations."""
    cells: dict[Key, Cell] = {}
    for table in _keys(m).values():
        for key, row, figure in table:
            value = row.values[figure]
            cells[key] = Cell(int(value * 100) if figure in HUNDREDTHS else int(value),
                              int(row.bases.get(figure, 0)), _KIND.get(figure, AMOUNT))
    return Tables(cells, _relations(m, cells))


def has_small(m: Month) -> bool:
    """Whether any of the month's cells describes 1-4 clients (else nothing is hidden: no choice to make)."""
    figures = (([m.total, *m.rows], ADDITIVE), (m.providers, PROVIDER_SUMS),
               ([m.switch_total, *m.bands] if m.switch_total is not None else [], ("switches", "clients")))
    return any(needs_suppression(r.bases.get(f, 0)) for rows, names in figures for r in rows for f in names)


def _relations(m: Month, cells: dict[Key, Cell]) -> list[Relation]:
    P = lambda *k: (m.funder_id or ALL_FUNDERS, *k)  # noqa: E731
    categories = [r.key["category"] for r in m.rows]
    rels = [Relation(P("total", f), tuple(P("category", c, f) for c in categories), distinct=f in DISTINCT,
                     nested=f in DISTINCT) for f in ADDITIVE]
    for row_key in [("category", c) for c in categories] + [("total",)]:
        rels += [Relation(P(*row_key, whole), tuple(P(*row_key, p) for p in parts)) for whole, parts in IDENTITIES]
    by_cat: dict[str, list[str]] = {}
    for r in m.providers:
        by_cat.setdefault(r.key["category"], []).append(r.key["provider_id"])
    for c, providers in sorted(by_cat.items()):
        for figure, (row_figure, distinct) in PROVIDER_SUMS.items():
            rels.append(Relation(P("category", c, row_figure), tuple(P("provider", c, p, figure) for p in providers),
                                 distinct=distinct))
    if m.switch_total is not None and m.bands:
        for f in ("switches", "clients"):
            rels.append(Relation(P("switches", f), tuple(P("age_band", b.key["age_band"], f) for b in m.bands),
                                 distinct=f == "clients", nested=f == "clients"))
    return [r for r in rels if _holds(r, cells)]


def _holds(rel: Relation, cells: dict[Key, Cell]) -> bool:
    """An exact relation is one only if the month's figures keep it (they do by construction; should one
    ever not, it is left out, said in the log, rather than make the audit's program infeasible)."""
    if rel.distinct or cells[rel.total].value == sum(cells[p].value for p in rel.parts):
        return True
    log.warning("report.relation_broken", total="/".join(map(str, rel.total)), parts=len(rel.parts))
    return False


# ------------------------------------------------------------------ one funder's month
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 256


def forget() -> None:
    """Empty the cache of choices (the bench measures every call choosing afresh)."""
    _CACHE.clear()


def pattern(m: Month, t: Tables | None = None) -> dict[Key, str]:
    """The month's hidden cells -> ``primary`` | ``secondary`` (``t``: its tables, when already built)."""
    if not has_small(m):
        return {}
    return _cached(("funder", m.funder_id, m.digest), lambda: disclosure.protect(t or tables(m)))


def _cached(key: tuple, choose: Callable[[], dict[Key, str]]) -> dict[Key, str]:
    """A choice through the cache, keyed by the digest of the figures it is made from (the choice depends
    on nothing else; months without a digest are not cached)."""
    if not key[-1]:
        return choose()
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    hidden = _CACHE[key] = choose()
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return hidden


def apply(m: Month, hidden: dict[Key, str]) -> None:
    """Mark the month's rows: a hidden cell's figure, the primary rule's other figures (ratios by their
    own base), and the ratios tied to a hidden figure."""
    for r in [*m.rows, m.total, *m.providers, *([m.switch_total] if m.switch_total else []), *m.bands]:
        r.primary()
    for table in _keys(m).values():
        for key, row, figure in table:
            status = hidden.get(key)
            if status is not None:
                row.suppressed[figure] = status
    hidden_charged = {r.key["category"] for r in m.rows if "charged_cents" in r.suppressed}
    for r in [*m.rows, m.total]:
        for ratio, parts in TIES.items():
            if ratio not in r.suppressed and any(p in r.suppressed for p in parts):
                r.suppressed[ratio] = "secondary"
    for r in m.providers:
        if "market_share" not in r.suppressed and ("charged_cents" in r.suppressed
                                                    or r.key["category"] in hidden_charged):
            r.suppressed["market_share"] = "secondary"


def price_rows(rows: list[Row], months: dict[str, Month]) -> None:
    """The price development's rows take the suppression of their month's category row."""
    for r in rows:
        m = months.get(r.key["period"])
        category = next((c for c in m.rows if c.key["category"] == r.key["category"]), None) if m else None
        for figure, cell in PRICE_CELLS.items():
            if category is not None and cell in category.suppressed:
                r.suppressed[figure] = category.suppressed[cell]
            elif category is None and needs_suppression(r.bases.get(figure, 0)):
                r.suppressed[figure] = "primary"  # a month reporting has no client figures for: the rule alone


# ------------------------------------------------------------------ the operator: every funder at once
def operator_pattern(op: Month, funders: dict[str, Month], with_tables: bool = False
                     ) -> tuple[Tables | None, dict[Key, str]]:
    """The statistics' hidden cells, chosen so that with every funder's report beside them no funder's
    small cell can be worked out (the funders' choices stay as they are: their cells are ``fixed``), and
    (when chosen now, or ``with_tables``) the tables they were chosen over: every funder's and the
    statistics', whose cells add up the funders' same cells. (None, {}) when nothing is hidden anywhere."""
    key = ("operator", op.digest and b"".join([op.digest] + [funders[f].digest for f in sorted(funders)]))
    if key in _CACHE and not with_tables:
        return None, _cached(key, dict)
    own = {f: tables(m) for f, m in sorted(funders.items())}
    funder_hidden: dict[Key, str] = {}
    for f, m in sorted(funders.items()):
        funder_hidden.update(pattern(m, own[f]))
    if not funder_hidden and not has_small(op):
        return None, {}
    t = operator_tables(op, own)
    return t, _cached(key, lambda: disclosure.protect(t, funder_hidden))


def operator_tables(op: Month, own: dict[str, Tables]) -> Tables:
    """The statistics' tables beside every funder's (``own``), each statistics cell the sum of the
    funders' same cells; the funders' cells ``fixed``."""
    stats = tables(op)
    cells, rels, fixed = dict(stats.cells), list(stats.relations), set()
    for t in own.values():
        cells.update(t.cells)
        rels += t.relations
        fixed |= set(t.cells)
    for key in stats.cells:
        parts = tuple((f, *key[1:]) for f in own if (f, *key[1:]) in cells)
        if parts:
            rel = Relation(key, parts)
            if _holds(rel, cells):
                rels.append(rel)
    return Tables(cells, rels, frozenset(fixed))
