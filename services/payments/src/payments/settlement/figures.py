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
    return SettlementFigures(gross, fee, gross - fee, spread(fee, charge_amounts))


def spread(total_cents: int, weights: list[int]) -> list[int]:
    """``money.allocate`` (largest remainder, ties to the earlier item) in whole numbers: for a total and weights
    that are not negative, each part's floor and remainder are ``divmod(total * weight, weight_sum)``, exactly
    the floor and the fraction (times ``weight_sum``) that ``allocate`` works out in ``Decimal``, at a fraction
    of its cost (a settlement spreads its fee over up to a million charges). Anything else goes to
    ``allocate`` itself (``tests/settlement/test_spread.py`` compares the two)."""
    weight_sum = sum(weights)
    if total_cents < 0 or weight_sum <= 0 or min(weights) < 0 or total_cents * weight_sum >= 10**25:
        return allocate(total_cents, weights)  # (beyond 10**25 Decimal's 28 digits may round the fraction)
    floors, rests = [], []
    for w in weights:
        q, r = divmod(total_cents * w, weight_sum)
        floors.append(q)
        rests.append(r)
    short = total_cents - sum(floors)
    if short:
        # the largest remainders, ties to the earlier item (a stable sort keeps equal keys in order, reversed too)
        for i in sorted(range(len(weights)), key=rests.__getitem__, reverse=True)[:short]:
            floors[i] += 1
    return floors



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
    return with_corrections(settle(charge_amounts, rate), pending)


def settle_gross(gross_cents: int, rate: Decimal) -> SettlementFigures:
    """``settle`` of charges summing to ``gross_cents`` without the spread (``charge_fees`` empty): for a caller
    that spreads the fee over the charges itself, as ``spread`` does (the settlement run does it in the database)."""
    fee = fee_cents(gross_cents, rate)
    return SettlementFigures(gross_cents, fee, gross_cents - fee, [])


def with_corrections(charges: SettlementFigures, pending: list[PendingCorrection]) -> OffsetSettlement:
    """``settle_with_corrections`` for the charges' figures already worked out."""
    net, taken = charges.net_cents, []
    for c in pending:
        if net - c.net_cents < 0:
            break
        net -= c.net_cents
        taken.append(c)
    gross = charges.gross_cents - sum(c.amount_cents for c in taken)
    fee = charges.fee_cents - sum(c.fee_cents for c in taken)
    return OffsetSettlement(SettlementFigures(gross, fee, gross - fee, charges.charge_fees), taken)
