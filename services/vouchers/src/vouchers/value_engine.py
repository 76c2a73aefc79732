"""The value of an income-related voucher, pure (no I/O): the funder's versioned formula table applied
to a household's size and gross monthly income.

The national guideline's shape (home care): the client's monthly payment share is
``max(0, gross monthly income - income limit) x percentage`` with the limit and the percentage of the
household's size; the value per unit is ``max value - share / units per month``, kept within
``[min value, max value]`` and rounded up to the cent (in the client's favour). Households larger
than the table's rows add ``extra_person_limit_cents`` to the limit and take ``extra_person_points``
off the percentage for each further person (never below 0 %).

The income is an argument only: nothing here keeps or logs it, and the result carries no trace of it
except the value (and, for the calculator, the share it gives).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from seteli_shared.errors import DomainError
from seteli_shared.money import round_down_cents, round_up_cents

KINDS = ("service_voucher", "income_related", "client_voucher", "personal_budget")
SERVICE_VOUCHER, INCOME_RELATED, CLIENT_VOUCHER, PERSONAL_BUDGET = KINDS
#: the household sizes a table lists one by one (the guideline's: 1 to 6 persons)
TABLE_ROWS = 6
MAX_HOUSEHOLD = 30
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class ValueTable:
    """One version of a funder's formula table for a category. Percentages are percent (``Decimal("35")``
    is 35 %); money is cents."""

    max_value_per_unit_cents: int
    min_value_per_unit_cents: int
    income_limits_cents: tuple[int, ...]
    percentages: tuple[Decimal, ...]
    extra_person_limit_cents: int
    extra_person_points: Decimal


@dataclass(frozen=True)
class ValueResult:
    value_per_unit_cents: int
    #: the client's monthly payment share, rounded down (in the client's favour); for display only
    monthly_share_cents: int
    income_limit_cents: int
    percentage: Decimal
    #: whether the value was raised to the table's minimum or kept at its maximum
    clamped: str | None


def check_table(table: ValueTable) -> None:
    """A table the formula can use, or the reason it cannot (``invalid_value_table``)."""
    def bad(message: str) -> DomainError:
        return DomainError("invalid_value_table", message)

    if len(table.income_limits_cents) != TABLE_ROWS or len(table.percentages) != TABLE_ROWS:
        raise bad(f"a table lists income limits and percentages for households of 1 to {TABLE_ROWS} persons")
    if table.min_value_per_unit_cents < 0 or table.max_value_per_unit_cents <= 0:
        raise bad("the maximum value must be positive and the minimum not negative")
    if table.min_value_per_unit_cents > table.max_value_per_unit_cents:
        raise bad("the minimum value is above the maximum")
    if any(limit < 0 for limit in table.income_limits_cents) or table.extra_person_limit_cents < 0:
        raise bad("income limits must not be negative")
    if any(not (p.is_finite() and 0 <= p <= HUNDRED) for p in table.percentages):
        raise bad("percentages are between 0 and 100")
    if not (table.extra_person_points.is_finite() and 0 <= table.extra_person_points <= HUNDRED):
        raise bad("the points taken off per further person are between 0 and 100")


def limit_and_percentage(table: ValueTable, household_size: int) -> tuple[int, Decimal]:
    """The income limit (cents) and the percentage for a household of ``household_size`` persons."""
    if not 1 <= household_size <= MAX_HOUSEHOLD:
        raise DomainError("invalid_household_size", f"a household has 1 to {MAX_HOUSEHOLD} persons")
    rows = len(table.income_limits_cents)
    if household_size <= rows:
        return table.income_limits_cents[household_size - 1], table.percentages[household_size - 1]
    further = household_size - rows
    limit = table.income_limits_cents[-1] + further * table.extra_person_limit_cents
    percentage = max(table.percentages[-1] - further * table.extra_person_points, Decimal(0))
    return limit, percentage


def monthly_share(table: ValueTable, household_size: int, gross_monthly_income_cents: int) -> Decimal:
    """The client's monthly payment share in cents, exact (not rounded)."""
    if gross_monthly_income_cents < 0:
        raise DomainError("invalid_income", "the income must not be negative")
    limit, percentage = limit_and_percentage(table, household_size)
    return Decimal(max(0, gross_monthly_income_cents - limit)) * percentage / HUNDRED


def value_per_unit(table: ValueTable, household_size: int, gross_monthly_income_cents: int,
                   units_per_month: Decimal) -> ValueResult:
    """The voucher's value per unit: ``max - share / units per month`` within ``[min, max]``, rounded
    up to the cent (the client's favour)."""
    units = Decimal(units_per_month)
    if not (units.is_finite() and units > 0):
        raise DomainError("invalid_units", "units per month must be positive")
    limit, percentage = limit_and_percentage(table, household_size)
    share = monthly_share(table, household_size, gross_monthly_income_cents)
    exact = Decimal(table.max_value_per_unit_cents) - share / units
    clamped = None
    if exact < table.min_value_per_unit_cents:
        exact, clamped = Decimal(table.min_value_per_unit_cents), "min"
    elif share == 0:
        clamped = "max"
    return ValueResult(value_per_unit_cents=round_up_cents(exact), monthly_share_cents=round_down_cents(share),
                       income_limit_cents=limit, percentage=percentage, clamped=clamped)


def guideline_table(max_cents: int = 2700, min_cents: int = 700) -> ValueTable:
    """The national guideline's home-care table (DOMAIN.md), for tests and examples."""
    return ValueTable(max_cents, min_cents, (56300, 103900, 162800, 201400, 243800, 279900),
                      tuple(Decimal(p) for p in ("35", "22", "18", "15", "13", "11")), 34200, Decimal(1))
