"""Reporting's rules, pure: periods, the small-cell suppression rule, averages of prices in force,
approvals' state at a date, and the standard monthly report's rows.

**Suppression (the privacy rule).** No figure leaving a funder describes fewer than ``MIN_CLIENTS`` (5)
clients. Every figure of a report row has a *base*: the number of distinct clients (pseudonymous
references) it describes. A figure whose base is 1-4 is *suppressed*: its value is ``null`` (``..`` in
CSV) and its name is listed in the row's ``suppressed``. A base of 0 describes nobody and is shown (0).
Figures about providers (approved, suspended, list prices) describe no client and are never suppressed.

**Secondary suppression** is chosen over every figure published about the same clients at once (the
linked tables of ``linked``, chosen and audited by ``disclosure``): a total minus the figures shown,
in any table of any report of the month, never gives back a suppressed figure closer than its
protection width.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable

from seteli_shared.errors import DomainError
from seteli_shared.money import round_cents

MIN_CLIENTS = 5
SCHEMA = "seteli.monthly-report.v1"
_PERIOD = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])$")  # ASCII digits only


# ------------------------------------------------------------------ periods
@dataclass(frozen=True)
class Period:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> "Period":
        m = _PERIOD.match(text or "")
        if not m or not 2000 <= int(m.group(1)) <= 2999:
            raise DomainError("invalid_period", "a period is a month YYYY-MM", period_format="YYYY-MM")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def of(cls, day: date) -> "Period":
        return cls(day.year, day.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last(self) -> date:
        return self.next().first - timedelta(days=1)

    def next(self) -> "Period":
        return Period(self.year + self.month // 12, self.month % 12 + 1)


def periods_between(first: Period, last: Period, limit: int = 120) -> list[Period]:
    out, p = [], first
    while (p.year, p.month) <= (last.year, last.month) and len(out) < limit:
        out.append(p)
        p = p.next()
    return out


# ------------------------------------------------------------------ ratios
def share(part: int, whole: int) -> Decimal | None:
    """part / whole to 4 decimals (0.8823), None when there is no whole."""
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def average_cents(total: int | Decimal, count: int | Decimal) -> int | None:
    return round_cents(Decimal(total) / Decimal(count)) if count else None


def cents_to_euros(cents: int | None) -> Decimal | None:
    return None if cents is None else (Decimal(cents) / 100).quantize(Decimal("0.01"))


# ------------------------------------------------------------------ the suppression rule
def needs_suppression(base: int) -> bool:
    return 0 < base < MIN_CLIENTS


@dataclass
class Row:
    """One row of a report: its figures, each figure's base (distinct clients), and what is suppressed."""

    key: dict[str, Any]
    values: dict[str, Any]
    bases: dict[str, int] = field(default_factory=dict)
    suppressed: dict[str, str] = field(default_factory=dict)  # figure -> primary | secondary

    def primary(self) -> None:
        for name, base in self.bases.items():
            if needs_suppression(base):
                self.suppressed[name] = "primary"

    def public(self) -> dict[str, Any]:
        """The row as it leaves the funder: suppressed figures are None, and named."""
        out = {**self.key, **{k: (None if k in self.suppressed else v) for k, v in self.values.items()}}
        out["suppressed"] = sorted(self.suppressed)
        return out


# ------------------------------------------------------------------ prices in force
@dataclass(frozen=True)
class PriceList:
    provider_id: str
    category: str
    unit_price_cents: int
    effective_from: date
    published_at: Any


def prices_in_force(lists: Iterable[PriceList], on: date) -> dict[tuple[str, str], int]:
    """(category, provider) -> the unit price in force on ``on``: the list with the latest
    ``effective_from`` not after it (of two from the same day, the later published)."""
    best: dict[tuple[str, str], PriceList] = {}
    for pl in lists:
        if pl.effective_from > on:
            continue
        key = (pl.category, pl.provider_id)
        cur = best.get(key)
        if cur is None or (pl.effective_from, pl.published_at) > (cur.effective_from, cur.published_at):
            best[key] = pl
    return {k: v.unit_price_cents for k, v in best.items()}


def average_list_prices(in_force: dict[tuple[str, str], int]) -> dict[str, tuple[int, int, int, int]]:
    """category -> (providers, average cents, lowest, highest) over the providers' prices in force."""
    by_cat: dict[str, list[int]] = {}
    for (category, _), price in in_force.items():
        by_cat.setdefault(category, []).append(price)
    return {c: (len(p), average_cents(sum(p), len(p)), min(p), max(p)) for c, p in by_cat.items()}


# ------------------------------------------------------------------ approvals at a date
@dataclass(frozen=True)
class Change:
    approval_id: str
    provider_id: str
    category: str
    kind: str  # approved | suspended | reinstated | revoked
    effective_from: date
    at: Any


def approval_states(changes: Iterable[Change], on: date) -> dict[str, tuple[str, str, str]]:
    """approval_id -> (category, provider_id, state on ``on``): the latest change in force by then."""
    latest: dict[str, Change] = {}
    for ch in changes:
        if ch.effective_from > on:
            continue
        cur = latest.get(ch.approval_id)
        if cur is None or (ch.effective_from, ch.at, ch.kind) > (cur.effective_from, cur.at, cur.kind):
            latest[ch.approval_id] = ch
    return {a: (c.category, c.provider_id, c.kind) for a, c in latest.items()}


def providers_by_state(states: dict[str, tuple[str, str, str]]) -> dict[str, dict[str, int]]:
    """category -> {"approved": distinct providers in force, "suspended": distinct suspended}."""
    out: dict[str, dict[str, set]] = {}
    for category, provider, state in states.values():
        slot = out.setdefault(category, {"approved": set(), "suspended": set()})
        if state in ("approved", "reinstated"):
            slot["approved"].add(provider)
        elif state == "suspended":
            slot["suspended"].add(provider)
    return {c: {k: len(v) for k, v in s.items()} for c, s in out.items()}
