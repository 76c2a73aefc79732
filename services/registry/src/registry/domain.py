"""Registry rules, pure (no I/O): identifiers checked with python-stdnum's maintained validators,
funders' contract terms, and the field types that carry these rules into request bodies.

A field rule refuses with ``PydanticCustomError(reason, message)``, so that every refused field of
one request is reported together in one 422. Messages never repeat the input.
"""
from __future__ import annotations

import re
import importlib
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints
from pydantic_core import PydanticCustomError
from stdnum import bic as std_bic
from stdnum import iban as std_iban
from stdnum.exceptions import ValidationError
from stdnum.fi import ytunnus

from seteli_shared.catalogue import CATEGORIES
from seteli_shared.errors import Conflict, DomainError
from seteli_shared.schemas import Count, Rate


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
#: a service must be charged within this many days of its date (three months: the usual term of funders'
#: voucher rulebooks); payments refuses a later charge (``charge_deadline_passed``)
DEFAULT_CHARGE_DEADLINE_DAYS = 90
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


FeeRate = Annotated[Rate, AfterValidator(valid_fee_rate)]
SettlementDays = Annotated[Count, Field(ge=1, le=90)]
ChargeDeadlineDays = Annotated[Count, Field(ge=1, le=3650)]
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
    charge_deadline_days: int = DEFAULT_CHARGE_DEADLINE_DAYS


def registration_conflicts(existing: FunderTerms, asked: FunderTerms) -> list[str]:
    """The fields in which a second registration of a funder differs from the first (none: a retry)."""
    return [f for f in FunderTerms.__dataclass_fields__ if getattr(existing, f) != getattr(asked, f)]


# ------------------------------------------------------------------ rulebooks
DEFAULT_PREPAYMENT_CHECK_MAX_AGE_DAYS = 365
RulebookVersion = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]{0,19}$")]
PrepaymentCheckMaxAge = Annotated[Count, Field(ge=1, le=3650)]


def valid_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/$.?#][^\s]*$", value):
        raise PydanticCustomError("invalid_url", "not an http(s) address")
    return value


Url = Annotated[str, Field(max_length=500), AfterValidator(valid_url)]


@dataclass(frozen=True)
class RulebookTerms:
    """What a version of a rulebook says; publishing the same version again must say the same."""

    funder_id: str
    category: str
    rulebook_version: str
    title: str
    document_url: str | None
    price_changes_need_approval: bool
    prepayment_check_max_age_days: int


def rulebook_conflicts(existing: RulebookTerms, asked: RulebookTerms) -> list[str]:
    return [f for f in RulebookTerms.__dataclass_fields__ if getattr(existing, f) != getattr(asked, f)]


# ------------------------------------------------------------------ the provider's register data
#: languages a provider may serve in: ISO 639-1 codes (se: Northern Sami)
LANGUAGES = frozenset({"fi", "sv", "en", "se", "ru", "et", "so", "ar", "fa", "ku", "uk", "de", "fr", "es",
                       "zh", "vi", "th", "sq", "tr", "pl"})


def valid_bic(value: str) -> str:
    try:
        return std_bic.validate(value)
    except ValidationError as exc:
        raise PydanticCustomError("invalid_bic", "not a valid BIC") from exc


def valid_language(value: str) -> str:
    value = value.lower()
    if value not in LANGUAGES:
        raise PydanticCustomError("unknown_language", "not a known ISO 639-1 language code; known: {known}",
                                  {"known": ", ".join(sorted(LANGUAGES))})
    return value


def valid_phone(value: str) -> str:
    """A telephone number, kept in its international form (``040 123 4567`` -> ``+358401234567``): a Finnish
    number written as ten digits has the shape of a personal identity code without its century sign, and
    about one in 88 of them would read as one to the privacy guard (``bench/privacy_guard.py``)."""
    compact = re.sub(r"[\s()-]", "", value)
    if not re.fullmatch(r"\+?[0-9]{5,15}", compact):
        raise PydanticCustomError("invalid_phone", "not a telephone number")
    if compact.startswith("00"):
        return "+" + compact[2:]
    if compact.startswith("0"):
        return "+358" + compact[1:]
    return compact


Bic = Annotated[str, AfterValidator(valid_bic)]
Language = Annotated[str, AfterValidator(valid_language)]
Phone = Annotated[str, Field(max_length=32), AfterValidator(valid_phone)]
MunicipalityCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{3}$")]
PostalCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{5}$")]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]

#: Finnish banks by the first digits of the account in the IBAN (the Finnish banks' common list):
#: the first four letters of their BIC
_FI_BANKS = {"1": "NDEA", "2": "NDEA", "31": "HAND", "33": "ESSE", "34": "DABA", "36": "SBAN", "37": "DNBA",
             "38": "SWED", "39": "SBAN", "405": "HELS", "497": "HELS", "47": "POPF", "4": "ITEL", "5": "OKOY",
             "6": "AABA", "713": "CITI", "715": "ITEL", "799": "HOLV", "8": "DABA"}


def bank_of_iban(iban: str) -> str | None:
    """The first four letters (the bank) of the BIC that goes with this IBAN, where it can be told:
    python-stdnum's country modules that know their banks (e.g. Belgium), and the Finnish banks."""
    country = iban[:2]
    if country == "FI":
        account = iban[4:]
        for length in (3, 2, 1):
            if account[:length] in _FI_BANKS:
                return _FI_BANKS[account[:length]]
        return None
    try:
        module = importlib.import_module(f"stdnum.{country.lower()}.iban")
    except ImportError:
        return None
    to_bic = getattr(module, "to_bic", None)
    try:
        bic = to_bic(iban) if to_bic else None
    except ValidationError:
        return None
    return bic[:4] if bic else None


def check_bic_matches_iban(bic: str, iban: str) -> None:
    bank = bank_of_iban(iban)
    if bank is not None and bic[:4] != bank:
        raise DomainError("bic_does_not_match_iban", "the BIC is not that of the IBAN's bank", expected_bank=bank)


@dataclass(frozen=True)
class Fitness:
    """What the rules need to know of a provider to let it apply and keep its approvals."""

    prepayment_registered: bool
    prepayment_checked_on: date | None
    liability_valid_until: date | None
    patient_valid_until: date | None
    service_units: int


def insurance_lapsed(f: Fitness, today: date) -> list[str]:
    """The insurances that are missing or no longer valid today."""
    return [name for name, until in (("liability_insurance", f.liability_valid_until),
                                     ("patient_insurance", f.patient_valid_until))
            if until is None or until < today]


def missing_for_application(f: Fitness, today: date) -> list[dict[str, str]]:
    """What a provider lacks before it may submit an application: one item per missing thing."""
    missing = []
    if not f.prepayment_registered:
        missing.append({"item": "prepayment_register", "reason": "not_in_prepayment_register"})
    for name in insurance_lapsed(f, today):
        missing.append({"item": name, "reason": "insurance_lapsed"})
    if f.service_units < 1:
        missing.append({"item": "service_units", "reason": "no_service_unit"})
    return missing


def suspension_reason(f: Fitness, today: date, prepayment_check_max_age_days: int) -> str | None:
    """Why the daily check suspends a provider's approval, or None while it is fit."""
    if insurance_lapsed(f, today):
        return "insurance_lapsed"
    if not f.prepayment_registered:
        return "not_in_prepayment_register"
    if f.prepayment_checked_on is None or \
            f.prepayment_checked_on < today - timedelta(days=prepayment_check_max_age_days):
        return "prepayment_register_check_outdated"
    return None


# ------------------------------------------------------------------ applications
class ApplicationStatus(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    INFO_REQUESTED = "info_requested"


#: action -> (the states it may be taken in, the state it leads to)
APPLICATION_TRANSITIONS: dict[str, tuple[frozenset[str], ApplicationStatus]] = {
    "submit": (frozenset({ApplicationStatus.DRAFT, ApplicationStatus.INFO_REQUESTED}), ApplicationStatus.SUBMITTED),
    "approve": (frozenset({ApplicationStatus.SUBMITTED}), ApplicationStatus.APPROVED),
    "reject": (frozenset({ApplicationStatus.SUBMITTED}), ApplicationStatus.REJECTED),
    "request_info": (frozenset({ApplicationStatus.SUBMITTED}), ApplicationStatus.INFO_REQUESTED),
}


def application_transition(current: str, action: str) -> ApplicationStatus:
    """The state an application goes to; 409 ``invalid_transition`` naming the current state otherwise."""
    allowed, to = APPLICATION_TRANSITIONS[action]
    if current not in allowed:
        raise Conflict("invalid_transition", f"an application that is {current} cannot be taken to {action}",
                       status=current, action=action)
    return to


# ------------------------------------------------------------------ approvals
class ApprovalStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


ReasonCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
Message = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
#: a decision's written grounds as the request carries them (``require_grounds`` says whether they are grounds)
GroundsText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)]
#: the least a written ground can be: a sentence, not a dash or a code
MIN_GROUNDS_CHARACTERS = 10


def require_grounds(grounds: str | None) -> str:
    """The written grounds of a decision that goes against a provider (rejecting its application or
    price list, suspending or revoking its approval): administrative law wants the provider told why,
    in words. At least ``MIN_GROUNDS_CHARACTERS`` characters with letters among them, else 422
    ``grounds_required``. Free text: stored and shown to the provider, never logged or put on the bus."""
    text = (grounds or "").strip()
    if len(text) < MIN_GROUNDS_CHARACTERS or sum(ch.isalpha() for ch in text) < 3:
        raise DomainError("grounds_required", f"a decision against a provider needs written grounds: a sentence "
                          f"of at least {MIN_GROUNDS_CHARACTERS} characters that the provider can read",
                          field="grounds", min_characters=MIN_GROUNDS_CHARACTERS)
    return text


def not_in_past(effective_from: date, today: date) -> None:
    if effective_from < today:
        raise DomainError("effective_from_in_past", "effective_from may not be in the past", today=today.isoformat())


def approval_change(status: str, action: str, *, same_as_current: bool = False) -> ApprovalStatus | None:
    """The state an approval goes to, or None when the action asks for what already holds (a retry:
    nothing changes). Revocation is final; anything else wrong is 409 ``invalid_transition``."""
    if action == "suspend":
        if status == ApprovalStatus.ACTIVE:
            return ApprovalStatus.SUSPENDED
        if status == ApprovalStatus.SUSPENDED and same_as_current:
            return None
    elif action == "reinstate":
        if status == ApprovalStatus.SUSPENDED:
            return ApprovalStatus.ACTIVE
        if status == ApprovalStatus.ACTIVE:
            return None
    elif action == "revoke":
        if status in (ApprovalStatus.ACTIVE, ApprovalStatus.SUSPENDED):
            return ApprovalStatus.REVOKED
        if same_as_current:
            return None
    raise Conflict("invalid_transition", f"an approval that is {status} cannot be taken to {action}",
                   status=status, action=action)


def differing(existing: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    return [k for k in asked if existing.get(k) != asked[k]]
