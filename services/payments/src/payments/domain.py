"""Payment rules, pure (no I/O): charge validation with machine-readable reasons, amounts,
settlement figures and the double-entry postings."""
from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from seteli_shared.errors import DomainError, NotFound
from seteli_shared.money import allocate, fee_cents, from_hundredths, units_amount_cents

ACCEPTED = "accepted"
SETTLED = "settled"


@dataclass(frozen=True)
class VoucherTerms:
    funder_id: str
    category: str
    units_per_period_x100: int
    period: str
    value_per_unit_cents: int
    valid_from: date
    valid_until: date
    provider_id: str | None


@dataclass(frozen=True)
class ChargeRequest:
    provider_id: str
    service_date: date
    units_x100: int
    unit_price_cents: int | None  # the provider's price per unit; defaults to the voucher's value


@dataclass(frozen=True)
class ChargeAmounts:
    unit_price_cents: int
    amount_cents: int  # paid by the funder through the voucher
    own_share_cents: int  # paid by the client to the provider (price above the voucher value)


def period_bounds(terms: VoucherTerms, service_date: date) -> tuple[date, date]:
    """The period whose units a charge on ``service_date`` uses."""
    if terms.period == "month":
        last = calendar.monthrange(service_date.year, service_date.month)[1]
        return service_date.replace(day=1), service_date.replace(day=last)
    return terms.valid_from, terms.valid_until


def amounts(terms: VoucherTerms, units_x100: int, unit_price_cents: int | None) -> ChargeAmounts:
    price = terms.value_per_unit_cents if unit_price_cents is None else unit_price_cents
    units = from_hundredths(units_x100)
    return ChargeAmounts(
        unit_price_cents=price,
        amount_cents=units_amount_cents(units, min(price, terms.value_per_unit_cents)),
        own_share_cents=units_amount_cents(units, max(price - terms.value_per_unit_cents, 0)),
    )


def validate_charge(terms: VoucherTerms | None, provider_approved: bool, units_used_x100: int,
                    req: ChargeRequest, today: date) -> ChargeAmounts:
    """Accept a charge or raise the first reason it is refused."""
    if terms is None:
        raise NotFound("voucher", retryable=True,
                       hint="a voucher issued moments ago may not have reached payments yet; retry shortly")
    if terms.provider_id is None:
        raise DomainError("provider_not_chosen", "the client has not chosen a provider for this voucher")
    if terms.provider_id != req.provider_id:
        raise DomainError("not_chosen_provider", "the voucher's client has chosen another provider")
    if not provider_approved:
        raise DomainError("provider_not_approved", "the provider is not approved for this funder and category")
    if req.units_x100 <= 0:
        raise DomainError("invalid_units", "units must be positive")
    if req.unit_price_cents is not None and req.unit_price_cents <= 0:
        raise DomainError("invalid_price", "unit price must be positive")
    if req.service_date > today:
        raise DomainError("service_date_in_future", "a service can be charged only once delivered")
    if not terms.valid_from <= req.service_date <= terms.valid_until:
        raise DomainError("service_date_outside_validity", "the service date is outside the voucher's validity",
                          valid_from=terms.valid_from.isoformat(), valid_until=terms.valid_until.isoformat())
    left = terms.units_per_period_x100 - units_used_x100
    if req.units_x100 > left:
        raise DomainError("units_exceeded", "more units than are left on the voucher for this period",
                          units_left=str(from_hundredths(max(left, 0))))
    return amounts(terms, req.units_x100, req.unit_price_cents)


# ------------------------------------------------------------------ settlement
@dataclass(frozen=True)
class SettlementFigures:
    gross_cents: int
    fee_cents: int
    net_cents: int
    charge_fees: list[int]  # per charge, in the order given; they sum to fee_cents exactly


def fee_rate_for(funder_rate: str | None, default_rate: Decimal) -> Decimal:
    """The fee rate of a funder's settlements: its contract's (from ``FunderRegistered``), else the
    operator's default for funders payments has not heard of."""
    if funder_rate is None:
        return default_rate
    rate = Decimal(funder_rate)
    if not fee_rate_in_range(rate):
        raise AssertionError(f"a fee rate out of range reached settlement: {funder_rate}")
    return rate


def fee_rate_in_range(rate: Decimal) -> bool:
    return rate.is_finite() and Decimal(0) <= rate < 1


def settle(charge_amounts: list[int], rate: Decimal) -> SettlementFigures:
    """Fee on the settlement's gross (rounded once), spread over its charges to the cent."""
    gross = sum(charge_amounts)
    fee = fee_cents(gross, rate)
    return SettlementFigures(gross, fee, gross - fee, allocate(fee, charge_amounts))


# ------------------------------------------------------------------ ledger postings
def funder_account(funder_id: str) -> str:
    return f"funder:{funder_id}:voucher_spend"


def provider_payable(provider_id: str) -> str:
    return f"provider:{provider_id}:payable"


def provider_payout_due(provider_id: str) -> str:
    return f"provider:{provider_id}:payout_due"


FEE_REVENUE = "operator:fee_revenue"


def balanced(postings: list[tuple[str, int]]) -> list[tuple[str, int]]:
    if sum(amount for _, amount in postings) != 0:
        raise AssertionError(f"unbalanced postings: {postings}")
    return postings


def charge_postings(funder_id: str, provider_id: str, amount_cents: int) -> list[tuple[str, int]]:
    """The funder owes the provider for an accepted charge."""
    return balanced([(funder_account(funder_id), amount_cents), (provider_payable(provider_id), -amount_cents)])


def settlement_postings(provider_id: str, figures: SettlementFigures) -> list[tuple[str, int]]:
    """The provider's payable is cleared: the fee to the operator, the net to be paid out."""
    return balanced([
        (provider_payable(provider_id), figures.gross_cents),
        (FEE_REVENUE, -figures.fee_cents),
        (provider_payout_due(provider_id), -figures.net_cents),
    ])
