"""Registry rules: identifiers are checked with python-stdnum's maintained validators."""
from __future__ import annotations

from stdnum import iban as std_iban
from stdnum.exceptions import ValidationError
from stdnum.fi import ytunnus

from seteli_shared.catalogue import CATEGORIES
from seteli_shared.errors import DomainError


def valid_business_id(value: str) -> str:
    """A Finnish business ID (Y-tunnus) in its standard form ``1234567-8``; check digit verified."""
    try:
        return ytunnus.format(ytunnus.validate(value))
    except ValidationError as exc:
        raise DomainError("invalid_business_id", f"not a valid Finnish business ID: {exc}") from exc


def valid_iban(value: str) -> str:
    try:
        return std_iban.validate(value)
    except ValidationError as exc:
        raise DomainError("invalid_iban", f"not a valid IBAN: {exc}") from exc


def known_category(value: str) -> str:
    if value not in CATEGORIES:
        raise DomainError("unknown_category", f"unknown service category {value!r}", known=sorted(CATEGORIES))
    return value
