"""Price rules, pure (no I/O, time passed in): what a price list may say, which list is in force on a
date, how a price list's approval moves, and a client's own share against a voucher's value.

Every refusal is a ``DomainError`` with a named reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Iterable, Mapping, Sequence

from seteli_shared.catalogue import CATEGORIES
from seteli_shared.errors import Conflict, DomainError
from seteli_shared.money import units_amount_cents

#: a sane ceiling for one unit (an hour, a visit, a day, a package): EUR 1,000.00
MAX_UNIT_PRICE_CENTS = 100_000
#: time-of-day tariffs a price list may set besides its base price
TARIFF_KEYS = ("weekday", "weekday_evening", "saturday", "sunday")


class PriceListStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    PUBLISHED = "published"
    REJECTED = "rejected"


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


def check_price(cents: int, what: str = "unit_price_cents") -> int:
    """A price per unit: whole cents, above zero, at most ``MAX_UNIT_PRICE_CENTS``."""
    if isinstance(cents, bool) or not isinstance(cents, int) or cents <= 0:
        raise DomainError("invalid_price", "a price is a whole number of cents above zero", field=what)
    if cents > MAX_UNIT_PRICE_CENTS:
        raise DomainError("price_too_high", "a price per unit may be at most {max} cents".format(
            max=MAX_UNIT_PRICE_CENTS), field=what, max_cents=MAX_UNIT_PRICE_CENTS)
    return cents


def check_tariffs(tariffs: Mapping[str, int | None]) -> dict[str, int]:
    """The time-of-day tariffs that are set, each a valid price."""
    unknown = sorted(set(tariffs) - set(TARIFF_KEYS))
    if unknown:
        raise DomainError("unknown_tariff", "known tariffs: " + ", ".join(TARIFF_KEYS), tariffs=unknown)
    return {k: check_price(v, k) for k, v in tariffs.items() if v is not None}


def check_category(category: str) -> str:
    if category not in CATEGORIES:
        raise DomainError("unknown_category", "unknown service category", category=category)
    return category


def unit_of(category: str) -> str:
    return CATEGORIES[check_category(category)].value


def first_of_month(day: date) -> date:
    return day.replace(day=1)


def earliest_effective_from(today: date) -> date:
    """A price may not take effect in the past, and never inside a period that may already be
    settled (before the first day of the current month): from today on."""
    return max(today, first_of_month(today))


def check_effective_from(effective_from: date, today: date) -> date:
    earliest = earliest_effective_from(today)
    if effective_from < earliest:
        raise DomainError("effective_date_in_past", "a price takes effect today at the earliest",
                          earliest=earliest.isoformat())
    return effective_from


def check_still_open(effective_from: date, today: date) -> None:
    """Approving a list late: its date may have passed, but it may not reach into a settled period."""
    if effective_from < first_of_month(today):
        raise DomainError("effective_date_in_past", "this price would take effect in a period that may "
                          "already be settled", earliest=first_of_month(today).isoformat())


def initial_status(price_changes_need_approval: bool) -> PriceListStatus:
    return PriceListStatus.PENDING_APPROVAL if price_changes_need_approval else PriceListStatus.PUBLISHED


def decide(status: str, decision: Decision) -> tuple[PriceListStatus, bool]:
    """The status after a funder's decision and whether it changed anything. The same decision
    again is a retry (no change); the other decision on a decided list is refused."""
    target = PriceListStatus.PUBLISHED if decision is Decision.APPROVE else PriceListStatus.REJECTED
    if status == target:
        return target, False
    if status != PriceListStatus.PENDING_APPROVAL:
        raise Conflict("price_list_not_pending", "this price list has been decided already", status=status)
    return target, True


@dataclass(frozen=True)
class PriceEntry:
    """What the rule of the price in force needs of a price list."""

    id: str
    status: str
    effective_from: date
    published_at: datetime | None
    unit_price_cents: int


def in_force_order(entry: PriceEntry) -> tuple:
    """Later effective date first; of the same date, the later publication (then the id) wins."""
    return entry.effective_from, entry.published_at or datetime.min, entry.id


def price_in_force(entries: Iterable[PriceEntry], on: date) -> PriceEntry | None:
    """The latest published list with ``effective_from <= on`` (none before the first one)."""
    candidates = [e for e in entries if e.status == PriceListStatus.PUBLISHED and e.effective_from <= on]
    return max(candidates, key=in_force_order, default=None)


def own_share_per_unit(price_cents: int, voucher_value_cents: int) -> int:
    """What the client pays per unit: the price above the voucher's value, never below zero."""
    return max(0, price_cents - voucher_value_cents)


def own_share_per_month(per_unit_cents: int, units_per_month: Decimal) -> int:
    """The own share of a month's units, rounded once."""
    return units_amount_cents(Decimal(units_per_month), per_unit_cents)


def sort_value(sort: str, price_cents: int | None, voucher_value_cents: int | None, name: str) -> int | str:
    """The comparison's sort key of one provider (pure twin of the SQL); no price sorts last."""
    if sort == "name":
        return name
    if price_cents is None:
        return MAX_UNIT_PRICE_CENTS + 1
    if sort == "own_share":
        return own_share_per_unit(price_cents, voucher_value_cents or 0)
    return price_cents


def ordered(rows: Sequence[tuple[int | str, str]]) -> list[tuple[int | str, str]]:
    """Rows ``(sort value, provider id)`` in the comparison's stable order."""
    return sorted(rows)
