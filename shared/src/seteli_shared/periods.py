"""The units of a voucher per period, pure: one rule shared by vouchers (what the client sees used and
left) and payments (what a charge may still use), so the two never disagree.

- A voucher's units are per calendar month (``period`` ``month``) or for its whole validity
  (``validity``).
- Monthly units reset each month: what is not used lapses, unless the funder's decision says
  ``carry_over``; then the unused units of the previous month (of its own allowance, not of what it
  carried in itself: carried units never roll on twice) add to this month's. A previous month wholly
  before the voucher's validity carries nothing.
- Units are per voucher, not per provider: a switch of provider keeps what is left.
"""
from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

MONTH = "month"
VALIDITY = "validity"


#: pure and asked again and again with the same values (a charge asks it about seven times): remembered
@lru_cache(maxsize=4096)
def period_bounds(period: str, valid_from: date, valid_until: date, day: date) -> tuple[date, date]:
    """The period whose units a service on ``day`` uses: its calendar month, or the whole validity."""
    if period == MONTH:
        last = calendar.monthrange(day.year, day.month)[1]
        return day.replace(day=1), day.replace(day=last)
    return valid_from, valid_until


@lru_cache(maxsize=4096)
def previous_period(period: str, valid_from: date, valid_until: date, day: date) -> tuple[date, date] | None:
    """The month before ``day``'s, when units are monthly and that month overlaps the validity; else None."""
    if period != MONTH:
        return None
    start, _ = period_bounds(period, valid_from, valid_until, day)
    prev_start, prev_end = period_bounds(period, valid_from, valid_until, start - timedelta(days=1))
    if prev_end < valid_from or prev_start > valid_until:
        return None
    return prev_start, prev_end


@dataclass(frozen=True)
class PeriodUnits:
    """A period's units, in hundredths: its own allowance, what the previous period carried into it,
    what is used and what is left (never below zero)."""

    start: date
    end: date
    allowance_x100: int
    carried_in_x100: int
    used_x100: int

    @property
    def available_x100(self) -> int:
        return self.allowance_x100 + self.carried_in_x100

    @property
    def left_x100(self) -> int:
        return max(0, self.available_x100 - self.used_x100)


def carried_in_x100(units_per_period_x100: int, carry_over: bool, previous_used_x100: int | None) -> int:
    """What the previous period carries into this one: its unused allowance when the rule says so."""
    if not carry_over or previous_used_x100 is None:
        return 0
    return max(0, units_per_period_x100 - previous_used_x100)


def period_units(*, units_per_period_x100: int, period: str, carry_over: bool, valid_from: date, valid_until: date,
                 day: date, used_x100: int, previous_used_x100: int | None) -> PeriodUnits:
    """The units of ``day``'s period: ``used_x100`` is what is charged for services in the period,
    ``previous_used_x100`` in the previous one (None when there is none: see ``previous_period``)."""
    start, end = period_bounds(period, valid_from, valid_until, day)
    if previous_period(period, valid_from, valid_until, day) is None:
        previous_used_x100 = None
    return PeriodUnits(start=start, end=end, allowance_x100=units_per_period_x100,
                       carried_in_x100=carried_in_x100(units_per_period_x100, carry_over, previous_used_x100),
                       used_x100=used_x100)
