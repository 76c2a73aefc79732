"""The four kinds of voucher and the terms each needs, pure (no I/O).

- ``service_voucher`` (palveluseteli): a fixed value per unit; the client pays the provider its price
  minus the value.
- ``income_related`` (tulosidonnainen palveluseteli): the value per unit comes from the funder's
  formula table (``value_engine``) for the household's size and gross monthly income; the voucher
  keeps the table version, the household size and the value, never the income. Monthly periods only
  (the formula divides a monthly share by the units per month).
- ``client_voucher`` (asiakasseteli): covers the whole price up to the funder's maximum per unit
  (``max_value_per_unit_cents``, also its ``value_per_unit_cents``); the client pays only a fixed fee,
  **per unit delivered** (``client_fee_cents``), to the funder, whichever provider is chosen.
- ``personal_budget`` (henkilökohtainen budjetti): ``budget_cents`` of money per period (a month, or
  the whole validity), spent in any of ``categories`` (which include ``category``) with providers the
  funder has approved for them. It has no units (``units_per_period`` 0) and no value per unit (0).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import StringConstraints

from seteli_shared.money import to_hundredths

from .value_engine import (CLIENT_VOUCHER, INCOME_RELATED, PERSONAL_BUDGET, SERVICE_VOUCHER, ValueTable,
                           value_per_unit)

VoucherKind = Literal["service_voucher", "income_related", "client_voucher", "personal_budget"]
TableVersion = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")]
KIND_DESCRIPTION = (
    "service_voucher: value_per_unit_cents; income_related: value_table_version, household_size, "
    "gross_monthly_income_cents (the value comes from the funder's formula table; the income is never kept); "
    "client_voucher: max_value_per_unit_cents and client_fee_cents (per unit, paid to the funder); "
    "personal_budget: budget_cents per period and categories (no units)")

#: the kind-specific fields of a request, and which kind needs each
_NEEDS: dict[str, tuple[str, ...]] = {
    SERVICE_VOUCHER: ("units_per_period", "value_per_unit_cents"),
    INCOME_RELATED: ("units_per_period", "value_table_version", "household_size", "gross_monthly_income_cents"),
    CLIENT_VOUCHER: ("units_per_period", "max_value_per_unit_cents", "client_fee_cents"),
    PERSONAL_BUDGET: ("budget_cents", "categories"),
}
_OPTIONAL = ("units_per_period", "value_per_unit_cents", "value_table_version", "household_size",
             "gross_monthly_income_cents", "max_value_per_unit_cents", "client_fee_cents", "budget_cents",
             "categories")


def check_request(body: Any) -> None:
    """A request's kind-specific fields: those its kind needs, and no other kind's (ValueError names
    fields only, never a value)."""
    needs = _NEEDS[body.kind]
    missing = [f for f in needs if getattr(body, f) is None]
    if missing:
        raise ValueError(f"a {body.kind} needs {', '.join(missing)}")
    foreign = [f for f in _OPTIONAL if f not in needs and getattr(body, f) is not None]
    if foreign:
        raise ValueError(f"a {body.kind} does not take {', '.join(foreign)}")
    if body.kind == INCOME_RELATED and body.period != "month":
        raise ValueError("an income_related voucher has a monthly period (the formula is monthly)")
    if body.kind == PERSONAL_BUDGET and body.category not in body.categories:
        raise ValueError("a personal_budget's categories include its category")


@dataclass(frozen=True)
class KindTerms:
    """What a voucher of a kind records (the income is not among them)."""

    kind: str
    value_per_unit_cents: int
    units_per_period_x100: int
    value_table_version: str | None = None
    household_size: int | None = None
    max_value_per_unit_cents: int | None = None
    client_fee_cents: int | None = None
    budget_cents: int | None = None
    categories: list[str] | None = None

    def columns(self) -> dict:
        """The voucher's columns these terms set."""
        return {"kind": self.kind, "value_per_unit_cents": self.value_per_unit_cents,
                "units_per_period_x100": self.units_per_period_x100,
                "value_table_version": self.value_table_version, "household_size": self.household_size,
                "max_value_per_unit_cents": self.max_value_per_unit_cents, "client_fee_cents": self.client_fee_cents,
                "budget_cents": self.budget_cents, "categories": self.categories}

    def event_fields(self) -> dict:
        """``VoucherIssued``'s additive fields."""
        return {"kind": self.kind, "value_table_version": self.value_table_version,
                "max_value_per_unit_cents": self.max_value_per_unit_cents, "client_fee_cents": self.client_fee_cents,
                "budget_cents": self.budget_cents, "categories": self.categories}


def terms_of(body: Any, table: ValueTable | None = None) -> KindTerms:
    """The terms a request gives (``table``: the formula table version it names, for income_related)."""
    units = to_hundredths(body.units_per_period) if body.units_per_period is not None else 0
    if body.kind == SERVICE_VOUCHER:
        return KindTerms(SERVICE_VOUCHER, body.value_per_unit_cents, units)
    if body.kind == INCOME_RELATED:
        assert table is not None, "an income_related voucher needs its table"
        result = value_per_unit(table, body.household_size, body.gross_monthly_income_cents,
                                Decimal(body.units_per_period))
        return KindTerms(INCOME_RELATED, result.value_per_unit_cents, units,
                         value_table_version=body.value_table_version, household_size=body.household_size)
    if body.kind == CLIENT_VOUCHER:
        return KindTerms(CLIENT_VOUCHER, body.max_value_per_unit_cents, units,
                         max_value_per_unit_cents=body.max_value_per_unit_cents,
                         client_fee_cents=body.client_fee_cents)
    return KindTerms(PERSONAL_BUDGET, 0, 0, budget_cents=body.budget_cents,
                     categories=list(dict.fromkeys(body.categories)))


def same_terms(voucher: Any, terms: KindTerms) -> bool:
    """Whether a voucher already holds these kind terms (a repeated decision)."""
    return all(getattr(voucher, k) == v for k, v in terms.columns().items())
