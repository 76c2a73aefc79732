"""The charging room's request and answer bodies: a charge, a bulk's line results, a correction."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Header, Request
from pydantic import BaseModel, Field, model_validator

from seteli_shared.events import Category
from seteli_shared.money import from_hundredths
from seteli_shared.schemas import BigCents, BusinessDate, Cents, RequestModel, Units

from ..models import Charge, ChargeCorrection
from . import correction_rules, domain, idempotency


class Tariff(StrEnum):
    WEEKDAY = "weekday"
    WEEKDAY_EVENING = "weekday_evening"
    SATURDAY = "saturday"
    SUNDAY = "sunday"


assert tuple(Tariff) == domain.TARIFFS


class ChargeCreate(RequestModel):
    voucher_id: str | None = Field(default=None, min_length=1, max_length=64)
    voucher_code: str | None = Field(default=None, min_length=1, max_length=32,
                                     description="the code the client gave the provider, instead of voucher_id "
                                     "(only the provider the client chose finds the voucher by it)")
    provider_id: str | None = Field(default=None, description="defaults to the caller's provider")
    provider_reference: str = Field(min_length=1, max_length=100,
                                    description="the provider's own reference; a retry with it is safe")
    service_date: BusinessDate
    units: Units = Field(gt=0, le=10000)
    unit_price_cents: Cents | None = Field(
        default=None, gt=0, le=10_000_000,
        description="the provider's price per unit, at most its registered price for the service date; defaults "
                    "to the registered price (of the tariff, if given), or to the voucher value when the provider "
                    "has no price list in force on that date")
    tariff: Tariff | None = Field(default=None, description="which price of the provider's price list applies "
                                  "(its base price when the list has no price for this tariff)")
    category: Category | None = Field(default=None, description="a personal budget's: which of its categories the "
                                      "service is (default: the voucher's category); other vouchers: only their own")

    @model_validator(mode="after")
    def _one_voucher(self) -> "ChargeCreate":
        if (self.voucher_id is None) == (self.voucher_code is None):
            raise ValueError("name the voucher by voucher_id or by voucher_code (one of them)")
        return self


class ChargePublic(BaseModel):
    id: str
    voucher_id: str
    funder_id: str
    provider_id: str
    category: str
    provider_reference: str
    service_date: date
    units: Decimal
    unit_price_cents: int
    amount_cents: int
    own_share_cents: int
    tariff: str | None = None
    price_registered: bool = Field(description="whether the provider had a price list in force on the service "
                                   "date; false: none was found, the price is the one sent or the voucher value")
    registered_price_cents: int | None = Field(default=None, description="the registered price the charge was "
                                               "checked against")
    price_list_id: str | None = None
    client_fee_cents: int | None = Field(default=None, description="a client voucher's charge: the client's fixed "
                                         "fee (per unit) for these units, owed to the funder, not the provider")
    status: str
    accepted_at: datetime
    settlement_id: str | None
    fee_cents: int | None
    net_cents: int | None
    corrected_units: Decimal = Field(default=Decimal("0.00"), description="units corrections after settlement "
                                     "took off the charge (`GET /charges/{id}/corrections`)")
    corrected_amount_cents: int = Field(default=0, description="the funder's amount corrections took off")

    @classmethod
    def of(cls, c: Charge) -> "ChargePublic":
        return cls(**c.model_dump(exclude={"units_x100", "corrected_units_x100"}), units=from_hundredths(c.units_x100),
                   corrected_units=from_hundredths(c.corrected_units_x100 or 0))


class ChargeStatus(StrEnum):
    ACCEPTED = domain.ACCEPTED
    SETTLED = domain.SETTLED
    CANCELLED = domain.CANCELLED


#: the longest Idempotency-Key taken (a longer one: 422, as the header's schema says)
MAX_IDEMPOTENCY_KEY = 200


def idempotency_key_of(app, key: str) -> idempotency.IdempotencyKey:  # noqa: ANN001
    """A caller's Idempotency-Key in the only form payments keeps, with the app's secret and retention."""
    settings = app.state.settings
    return idempotency.IdempotencyKey.of(key, settings.idempotency_key_secret,
                                         timedelta(hours=settings.idempotency_retention_hours))


async def idempotency_key(request: Request, key: Annotated[str | None, Header(
        alias="Idempotency-Key", max_length=MAX_IDEMPOTENCY_KEY, description=(
            "the same key with the same body answers the first answer again (another body: 422 "
            "`idempotency_key_reused`; while the first is answered: 409 `request_in_flight`); kept per caller "
            "for `IDEMPOTENCY_RETENTION_HOURS` (24) hours, as a keyed hash (never the key itself), then purged"))
        ] = None) -> idempotency.IdempotencyKey | None:
    """The caller's Idempotency-Key, at once in the only form payments keeps (``idempotency.IdempotencyKey``)."""
    return None if key is None else idempotency_key_of(request.app, key)


IdempotencyKeyHeader = Annotated[idempotency.IdempotencyKey | None, Depends(idempotency_key)]


class LineResult(BaseModel):
    line: int = Field(description="the line's number: its position in a JSON list (from 1), its line in a CSV "
                      "file (the header is line 1)")
    provider_reference: str | None
    status: str = Field(description="accepted | repeated (a charge with this reference exists: it) | refused")
    charge_id: str | None = None
    reason: str | None = Field(default=None, description="why the line was refused (the single charge's reasons, "
                               "or invalid_request with the fields, invalid_number_or_date, too_many_lines...)")
    details: dict | None = None


class BulkWarning(BaseModel):
    """Something about the file as a whole that did not stop it (a CSV file's columns the format lacks)."""

    code: str = Field(description="csv_unknown_columns_ignored: the header names columns the format does not "
                      "have; their cells were ignored")
    message: str
    columns: list[str] = Field(default_factory=list, description="the ignored columns as the header names them "
                               "(at most 20, each at most 60 characters)")
    positions: list[int] = Field(default_factory=list, description="their places in the header, from 1")
    count: int = Field(default=0, description="how many columns were ignored")
    known_columns: list[str] = Field(default_factory=list, description="the columns the format has")


class BulkResult(BaseModel):
    lines: int
    accepted: int
    repeated: int
    refused: int
    results: list[LineResult]
    warnings: list[BulkWarning] = Field(default_factory=list, description=(
        "about the file as a whole, one per kind (a CSV file: its ignored columns); none for a JSON list"))


CorrectionReason = StrEnum("CorrectionReason", {r.upper(): r for r in correction_rules.CORRECTION_REASONS})


class CorrectionCreate(RequestModel):
    reason: CorrectionReason = Field(description="why the charge is corrected (a code: no free text)")
    reversal: bool = Field(default=False, description="the whole charge is reversed (then neither units nor "
                           "amount_cents is given)")
    units: Units | None = Field(default=None, ge=0, le=10000, description=(
        "the units the charge should have been (fewer than now); its amount, own share and client fee follow in "
        "proportion to the charge as accepted"))
    amount_cents: BigCents | None = Field(default=None, ge=0, le=10_000_000_000, description=(
        "the amount the funder should have paid (lower than now); with units, at most what the units give"))

    @model_validator(mode="after")
    def _something(self) -> "CorrectionCreate":
        if self.reversal == (self.units is not None or self.amount_cents is not None):
            raise ValueError("give reversal true, or the units and/or the amount the charge should have been")
        return self


class CorrectionPublic(BaseModel):
    id: str
    charge_id: str
    funder_id: str
    provider_id: str
    category: str
    service_date: date
    kind: str = Field(description="reversal | partial")
    reason: str
    units: Decimal = Field(description="units the correction removed")
    amount_cents: int = Field(description="the funder's amount the correction removed")
    own_share_cents: int
    client_fee_cents: int | None
    fee_cents: int = Field(description="the operator's fee given back")
    net_cents: int = Field(description="what the provider's next payout from the funder is reduced by")
    corrected_settlement_id: str = Field(description="the settlement that paid the charge")
    offset_settlement_id: str | None = Field(description="the later settlement whose payout was reduced; null "
                                             "while the correction waits for one")
    created_at: datetime

    @classmethod
    def of(cls, c: ChargeCorrection) -> "CorrectionPublic":
        return cls(**c.model_dump(exclude={"units_x100", "voucher_id"}), units=from_hundredths(c.units_x100))
