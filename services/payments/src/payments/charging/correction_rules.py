"""Corrections of settled charges, pure (no I/O): what a correction removes from a charge (units, the
funder's amount, own share, client fee and the part of the fee given back), never raising it."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from seteli_shared.errors import DomainError
from seteli_shared.money import from_hundredths, round_cents


REVERSAL = "reversal"
PARTIAL = "partial"
#: why a settled charge is corrected (codes only: no free text, so no personal data can enter)
CORRECTION_REASONS = ("service_not_delivered", "wrong_units", "wrong_price", "duplicate_charge", "funder_decision",
                      "other")


@dataclass(frozen=True)
class ChargeFigures:
    """A settled charge's figures: as accepted and settled, or as they stand after corrections."""

    units_x100: int
    amount_cents: int
    own_share_cents: int
    client_fee_cents: int | None
    fee_cents: int

    def minus(self, other: "ChargeFigures") -> "ChargeFigures":
        return ChargeFigures(self.units_x100 - other.units_x100, self.amount_cents - other.amount_cents,
                             self.own_share_cents - other.own_share_cents,
                             None if self.client_fee_cents is None else
                             self.client_fee_cents - (other.client_fee_cents or 0),
                             self.fee_cents - other.fee_cents)


@dataclass(frozen=True)
class Correction:
    """What a correction removes from a charge (positive figures), and the charge after it."""

    kind: str
    removed: ChargeFigures
    after: ChargeFigures

    @property
    def net_cents(self) -> int:
        """What the provider owes back: the amount removed less the fee given back."""
        return self.removed.amount_cents - self.removed.fee_cents


def _part(total: int | None, numerator: int, denominator: int) -> int | None:
    if total is None:
        return None
    if denominator == 0:
        return 0
    return round_cents(Decimal(total) * numerator / denominator)


def correct(original: ChargeFigures, now: ChargeFigures, *, reversal: bool, units_x100: int | None = None,
            amount_cents: int | None = None) -> Correction:
    """A correction of a settled charge: the whole of it (``reversal``), or the units (and with them the
    amount, own share and client fee, in proportion to the original charge) and/or the funder's amount
    lowered to what is given. The fee given back is the charge's fee in proportion to the amount that
    remains, so that a reversal gives back all of it. ``now`` is the charge after earlier corrections."""
    if now.units_x100 == 0 and now.amount_cents == 0:
        raise DomainError("charge_already_reversed", "the charge has been reversed already: nothing is left to "
                          "correct", status_code=409)
    if reversal:
        if units_x100 is not None or amount_cents is not None:
            raise DomainError("invalid_request", "a reversal takes neither units nor an amount")
        after = ChargeFigures(0, 0, 0, None if original.client_fee_cents is None else 0, 0)
        return Correction(REVERSAL, now.minus(after), after)
    if units_x100 is None and amount_cents is None:
        raise DomainError("invalid_request", "a correction gives the units or the amount the charge should have "
                          "been, or is a reversal")
    new_units = now.units_x100 if units_x100 is None else units_x100
    if new_units < 0 or (amount_cents is not None and amount_cents < 0):
        raise DomainError("invalid_request", "units and amount cannot be negative")
    if new_units > now.units_x100:
        raise DomainError("correction_increases_charge", "a correction may only lower the charge: charge more as a "
                          "new charge", units_now=str(from_hundredths(now.units_x100)))
    if units_x100 is None:
        by_units = ChargeFigures(now.units_x100, now.amount_cents, now.own_share_cents, now.client_fee_cents, 0)
    else:
        by_units = ChargeFigures(new_units, _part(original.amount_cents, new_units, original.units_x100),
                                 _part(original.own_share_cents, new_units, original.units_x100),
                                 _part(original.client_fee_cents, new_units, original.units_x100), 0)
    new_amount = by_units.amount_cents if amount_cents is None else amount_cents
    if new_amount > min(by_units.amount_cents, now.amount_cents):
        raise DomainError("correction_increases_charge", "a correction may only lower the charge: charge more as a "
                          "new charge", amount_cents_now=min(by_units.amount_cents, now.amount_cents))
    if new_units == now.units_x100 and new_amount == now.amount_cents:
        raise DomainError("correction_changes_nothing", "the corrected figures are the charge's figures already")
    own_share = min(by_units.own_share_cents, now.own_share_cents)
    client_fee = (None if by_units.client_fee_cents is None else min(by_units.client_fee_cents, now.client_fee_cents))
    fee = min(_part(original.fee_cents, new_amount, original.amount_cents), now.fee_cents)
    after = ChargeFigures(new_units, new_amount, own_share, client_fee, fee)
    kind = REVERSAL if (new_units, new_amount) == (0, 0) else PARTIAL
    return Correction(kind, now.minus(after), after)


