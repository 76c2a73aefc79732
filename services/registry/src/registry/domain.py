"""Registry rules, pure (no I/O): identifiers checked with python-stdnum's maintained validators,
funders' contract terms, and the field types that carry these rules into request bodies.

A field rule refuses with ``PydanticCustomError(reason, message)``, so that every refused field of
one request is reported together in one 422. Messages never repeat the input.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError
from stdnum import iban as std_iban
from stdnum.exceptions import ValidationError
from stdnum.fi import ytunnus

from seteli_shared.catalogue import CATEGORIES


def valid_business_id(value: str) -> str:
    """A Finnish business ID (Y-tunnus) in its standard form ``1234567-8``; check digit verified."""
    try:
        return ytunnus.format(ytunnus.validate(value))
    except ValidationError as exc:
        raise PydanticCustomError("invalid_business_id", "not a valid Finnish business ID") from exc


def valid_iban(value: str) -> str:
    """An IBAN in its compact form, check digits verified."""
    try:
        return std_iban.validate(value)
    except ValidationError as exc:
        raise PydanticCustomError("invalid_iban", "not a valid IBAN") from exc


def known_category(value: str) -> str:
    if value not in CATEGORIES:
        raise PydanticCustomError("unknown_category", "unknown service category; known: {known}",
                                  {"known": ", ".join(sorted(CATEGORIES))})
    return value


BusinessId = Annotated[str, AfterValidator(valid_business_id)]
Iban = Annotated[str, AfterValidator(valid_iban)]
CategoryCode = Annotated[str, AfterValidator(known_category)]


# ------------------------------------------------------------------ funders
class FunderKind(StrEnum):
    MUNICIPALITY = "municipality"
    WELLBEING_SERVICES_COUNTY = "wellbeing_services_county"
    JOINT_AUTHORITY = "joint_authority"


DEFAULT_FEE_RATE = Decimal("0.05")  # the seed's 5 % of the settled value
DEFAULT_SETTLEMENT_DAYS = 14  # the seed's guarantee: settled within 14 days of a charge
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def valid_fee_rate(value: Decimal) -> Decimal:
    """An operator's fee rate: a fraction, at least 0 and below 1, in its shortest exact form."""
    if not value.is_finite() or not Decimal(0) <= value < 1:
        raise PydanticCustomError("invalid_fee_rate", "the fee rate must be at least 0 and below 1")
    return value.normalize() if value else Decimal(0)


def valid_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise PydanticCustomError("invalid_email", "not an e-mail address")
    return value.lower()


FeeRate = Annotated[Decimal, Field(max_digits=6, decimal_places=4), AfterValidator(valid_fee_rate)]
SettlementDays = Annotated[int, Field(ge=1, le=90)]
Email = Annotated[str, Field(max_length=254), AfterValidator(valid_email)]


def fee_rate_text(rate: Decimal) -> str:
    """How a rate is stored: plain digits, never an exponent (``0.05``, ``0``, ``0.125``)."""
    return format(valid_fee_rate(rate), "f")


@dataclass(frozen=True)
class FunderTerms:
    """What a funder's registration says; a retry must say the same."""

    funder_id: str
    name: str
    kind: str
    operator_fee_rate: str
    settlement_days: int
    contact_email: str | None


def registration_conflicts(existing: FunderTerms, asked: FunderTerms) -> list[str]:
    """The fields in which a second registration of a funder differs from the first (none: a retry)."""
    return [f for f in FunderTerms.__dataclass_fields__ if getattr(existing, f) != getattr(asked, f)]
