"""Settlement figures, pure (no I/O): the fee at the funder's contract rate rounded once and spread over the
charges to the cent, and the corrections of earlier settlements offset against a payout while its net stays at
or above zero."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from seteli_shared.money import allocate, fee_cents


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



@dataclass(frozen=True)
class PendingCorrection:
    id: str
    amount_cents: int
    fee_cents: int

    @property
    def net_cents(self) -> int:
        return self.amount_cents - self.fee_cents


@dataclass(frozen=True)
class OffsetSettlement:
    """A settlement's figures with the corrections it offsets: gross, fee and net are the charges' less the
    corrections'; ``offset`` the corrections taken (the others carry forward)."""

    figures: SettlementFigures
    offset: list[PendingCorrection] = field(default_factory=list)


def settle_with_corrections(charge_amounts: list[int], rate: Decimal,
                            pending: list[PendingCorrection]) -> OffsetSettlement:
    """The charges settled as ``settle`` does, less the provider's pending corrections with the funder, in
    the order given, as long as the net stays at or above zero: a correction that would make it negative
    waits (with those after it) for a later settlement, so a payout is never negative."""
    charges = settle(charge_amounts, rate)
    net, taken = charges.net_cents, []
    for c in pending:
        if net - c.net_cents < 0:
            break
        net -= c.net_cents
        taken.append(c)
    gross = charges.gross_cents - sum(c.amount_cents for c in taken)
    fee = charges.fee_cents - sum(c.fee_cents for c in taken)
    return OffsetSettlement(SettlementFigures(gross, fee, gross - fee, charges.charge_fees), taken)
