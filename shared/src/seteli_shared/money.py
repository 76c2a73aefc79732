"""Money is integer cents; rates are Decimal. Every rounding in the system goes through here."""
from __future__ import annotations

import math
from fractions import Fraction
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal


def round_cents(amount: Decimal) -> int:
    """Round an amount of cents to whole cents, half away from zero (the one commercial rule)."""
    return int(Decimal(amount).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def round_up_cents(amount: Decimal) -> int:
    """Round an amount of cents up to whole cents (towards plus infinity): a value in the client's
    favour, e.g. an income-related voucher's value per unit (2817.625 -> 2818)."""
    return int(Decimal(amount).to_integral_value(rounding=ROUND_CEILING))


def round_down_cents(amount: Decimal) -> int:
    """Round an amount of cents down to whole cents (towards minus infinity): a payment in the client's
    favour, e.g. the client's monthly share shown by the value calculator."""
    return int(Decimal(amount).to_integral_value(rounding=ROUND_FLOOR))


def fee_cents(gross_cents: int, rate: Decimal) -> int:
    """The operator's fee on a settled gross amount."""
    if gross_cents < 0:
        raise ValueError("gross must not be negative")
    return round_cents(Decimal(gross_cents) * Decimal(rate))


def allocate(total_cents: int, weights: list[int]) -> list[int]:
    """Split ``total_cents`` in proportion to ``weights`` so that the parts sum exactly
    to the total (largest remainder; ties go to the earlier item)."""
    if not weights:
        if total_cents:
            raise ValueError("cannot allocate a non-zero total over nothing")
        return []
    weight_sum = sum(weights)
    if weight_sum == 0:
        parts = [0] * len(weights)
        parts[0] = total_cents
        return parts
    # exact fractions: in ``Decimal`` a tie (equal remainders) could differ in its last digit and go to a later item
    whole, of = Fraction(total_cents), Fraction(weight_sum)
    exact = [whole * Fraction(w) / of for w in weights]
    parts = [math.floor(x) for x in exact]
    short = total_cents - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:short]:
        parts[i] += 1
    return parts


def units_amount_cents(units: Decimal, unit_price_cents: int) -> int:
    """Amount of ``units`` (hours, visits... possibly fractional) at a price per unit."""
    return round_cents(Decimal(units) * unit_price_cents)


def euros(cents: int) -> str:
    """Display form, e.g. 9500 -> '95.00'."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def to_hundredths(quantity: Decimal) -> int:
    """Units (hours, visits...) are kept as integer hundredths; more precision is refused."""
    scaled = Decimal(quantity) * 100
    if scaled != scaled.to_integral_value():
        raise ValueError("units may have at most two decimals")
    return int(scaled)


def from_hundredths(hundredths: int) -> Decimal:
    return (Decimal(hundredths) / 100).quantize(Decimal("0.01"))
