"""The vouchers API's request bodies and answers, one answer shape per audience."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, model_validator

from seteli_shared.catalogue import Period
from seteli_shared.codes import grouped
from seteli_shared.decisions import AgeBand, MunicipalityCode
from seteli_shared.events import FunderId
from seteli_shared.money import from_hundredths
from seteli_shared.schemas import BigCents, BusinessDate, Cents, Count, Page, RequestModel, Units

from . import domain, kinds
from .kinds import KIND_DESCRIPTION, TableVersion, VoucherKind
from .lifecycle_models import PeriodUsage
from .models import Voucher

Reference = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
                      AfterValidator(domain.valid_reference)]
Category = Annotated[str, StringConstraints(strip_whitespace=True, max_length=40),
                     AfterValidator(domain.known_category)]


class VoucherCreate(RequestModel):
    funder_id: FunderId | None = Field(default=None, description="defaults to the caller's funder")
    decision_ref: Reference = Field(description="the funder's reference of the service decision")
    client_ref: Reference = Field(description="pseudonymous client reference issued by the funder; never a HETU")
    category: Category
    units_per_period: Units | None = Field(default=None, gt=0, le=100000,
                                             description="required but for a personal_budget")
    period: Period = Period.MONTH
    value_per_unit_cents: Cents | None = Field(default=None, gt=0, le=10_000_000,
                                             description="service_voucher only (required there)")
    valid_from: BusinessDate = Field(description="at most a year before today and at most a year ahead")
    valid_until: BusinessDate = Field(description="not before today; at most five years after valid_from")
    carry_over: bool = Field(default=False, description="monthly units only: the unused units of a month add to "
                                                        "the next month's")
    age_band: AgeBand | None = Field(default=None, description='statistics only: the client\'s age band, e.g. '
                                                               '"75-84" or "90+"')
    municipality_of_residence: MunicipalityCode | None = Field(
        default=None, description="statistics only: the client's 3-digit municipality of residence code")
    # ---- the voucher's kind (vouchers.kinds: the terms each kind needs)
    kind: VoucherKind = Field(default="service_voucher", description=KIND_DESCRIPTION)
    value_table_version: TableVersion | None = Field(
        default=None, description="income_related: the funder's formula table version for this category")
    household_size: Count | None = Field(default=None, ge=1, le=30, description="income_related")
    gross_monthly_income_cents: BigCents | None = Field(
        default=None, ge=0, le=100_000_000,
        description="income_related: used only to compute the value, never stored or logged")
    max_value_per_unit_cents: Cents | None = Field(default=None, gt=0, le=10_000_000,
                                                 description="client_voucher: the funder's maximum per unit")
    client_fee_cents: Cents | None = Field(default=None, ge=0, le=10_000_000,
                                         description="client_voucher: the client's fixed fee per unit, paid to "
                                                     "the funder whichever provider is chosen")
    budget_cents: BigCents | None = Field(default=None, gt=0, le=1_000_000_000,
                                     description="personal_budget: money per period (month or validity)")
    categories: list[Category] | None = Field(default=None, min_length=1, max_length=17,
                                              description="personal_budget: the categories it may be spent on "
                                                          "(including `category`)")

    @model_validator(mode="after")
    def _kind_terms(self) -> "VoucherCreate":
        kinds.check_request(self)
        return self


class ProviderChoice(RequestModel):
    provider_id: str = Field(min_length=1, max_length=64)


class ClientLogin(RequestModel):
    voucher_code: str = Field(min_length=1, max_length=32)
    client_login_code: str = Field(min_length=1, max_length=32,
                                   description="the code printed in the decision letter, shown to no one else")


# ------------------------------------------------------------------ answers
class _Terms(BaseModel):
    """What every audience sees."""

    id: str
    category: str
    unit: str
    units_per_period: Decimal
    period: str
    value_per_unit_cents: int
    valid_from: date
    valid_until: date
    status: str
    provider_id: str | None
    carry_over: bool = False
    kind: str = "service_voucher"
    max_value_per_unit_cents: int | None = None
    client_fee_cents: int | None = None
    budget_cents: int | None = None
    categories: list[str] | None = None


class VoucherForProvider(_Terms):
    """The chosen provider's view: what it needs to charge; no client or decision references."""

    view: Literal["provider"] = "provider"
    voucher_code: str | None


class VoucherForClient(_Terms):
    """The client's view: its voucher's terms and code; not the funder's references."""

    view: Literal["client"] = "client"
    funder_id: str
    voucher_code: str | None
    issued_at: datetime
    usage: PeriodUsage | None = Field(default=None, description="the current period's units used and left "
                                                                "(GET /vouchers/{id} only)")


class VoucherForFunder(_Terms):
    """The funder's and operator staff's view: everything but the client's login material."""

    view: Literal["funder"] = "funder"
    funder_id: str
    decision_ref: str
    client_ref: str
    voucher_code: str | None
    issued_at: datetime
    client_login_code_issued_at: datetime | None
    usage: PeriodUsage | None = Field(default=None, description="the current period's units used and left "
                                                                "(GET /vouchers/{id} only)")
    value_table_version: str | None = None
    household_size: int | None = None


class IssuedVoucher(VoucherForFunder):
    """The answer to the issuing funder: with the client login code, shown this once (201 only; a
    repeated decision answers 200 without it: issue a new one with ``POST /vouchers/{id}/client-login-code``)."""

    client_login_code: str | None = None


class ClientLoginCode(BaseModel):
    """A new client login code, shown this once; the previous one no longer works."""

    voucher_id: str
    voucher_code: str
    client_login_code: str
    issued_at: datetime


class ClientToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    voucher_id: str


VoucherView = Annotated[Union[VoucherForFunder, VoucherForProvider, VoucherForClient], Field(discriminator="view")]


class VoucherPage(Page[VoucherView]):
    """A page of vouchers, each in the caller's view."""

_VIEWS: dict[domain.Audience, type[_Terms]] = {
    domain.Audience.FUNDER: VoucherForFunder, domain.Audience.PROVIDER: VoucherForProvider,
    domain.Audience.CLIENT: VoucherForClient,
}


def shown_code(code: str | None) -> str | None:
    """A voucher or login code as people read it from a letter or a screen: in groups of four
    (``7RH8-ZB3R-Z5K``); any spelling of it is accepted back (``codes.normalise``)."""
    return None if code is None else grouped(code)


def _fields(v: Voucher) -> dict:
    return {**v.model_dump(exclude={"units_per_period_x100", "client_login_salt", "client_login_hash",
                                    "client_login_issued_at"}),
            "voucher_code": shown_code(v.voucher_code),
            "units_per_period": from_hundredths(v.units_per_period_x100),
            "client_login_code_issued_at": v.client_login_issued_at, "usage": None}


def view_of(v: Voucher, audience: domain.Audience) -> _Terms:
    cls = _VIEWS[audience]
    data = _fields(v)
    return cls(**{k: data[k] for k in cls.model_fields if k != "view"})


def issued(v: Voucher, client_login_code: str | None) -> IssuedVoucher:
    return IssuedVoucher(**{k: _fields(v)[k] for k in VoucherForFunder.model_fields if k != "view"},
                         client_login_code=shown_code(client_login_code))
