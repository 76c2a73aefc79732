"""Corrections of settled charges over HTTP. Parse, authorise, call a use case (``corrections``)."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator

from seteli_shared.auth import Principal, Role, require
from seteli_shared.clock import ClockDep
from seteli_shared.money import from_hundredths, to_hundredths
from seteli_shared.schemas import BigCents, RequestModel, Units
from seteli_shared.service import SessionsDep
from seteli_shared.web import error_responses

from . import corrections, domain, intake_api
from .api import READERS
from .models import ChargeCorrection

router = APIRouter()
#: who may correct a settled charge: the charge's provider (its staff or billing system), its funder's finance
CORRECTORS = (Role.PROVIDER_CHARGER, Role.PROVIDER_BILLING_SYSTEM, Role.FUNDER_FINANCE)

CorrectionReason = StrEnum("CorrectionReason", {r.upper(): r for r in domain.CORRECTION_REASONS})


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


@router.post("/charges/{charge_id}/corrections", status_code=201, response_model=CorrectionPublic,
             tags=["charges"], responses=error_responses(404, 409, 422))
async def correct_charge(
    charge_id: str, body: CorrectionCreate, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*CORRECTORS)],
    idempotency_key: intake_api.IdempotencyKey = None,
):  # noqa: ANN201
    """Correct a settled charge: the whole of it (`reversal`) or fewer `units` / a lower `amount_cents`. The
    difference is a reversing ledger entry and `ChargeCorrected`; it is taken off the provider's next payout
    from the funder (a negative line on that statement, the fee given back with it; a payout never goes
    negative: what does not fit waits for the one after). Refusals: 409 `charge_not_settled` (cancel an
    unsettled charge instead), `charge_cancelled`, `charge_already_reversed`; 422
    `correction_increases_charge`, `correction_changes_nothing`. With an `Idempotency-Key` a retry answers
    the first answer."""
    reversal, units = body.reversal, None if body.units is None else to_hundredths(body.units)

    async def answer() -> tuple[int, object]:
        made = await corrections.correct_charge(sessions, clock, principal, charge_id, reason=body.reason.value,
                                                reversal=reversal, units_x100=units, amount_cents=body.amount_cents)
        return 201, CorrectionPublic.of(made).model_dump(mode="json")

    key_owner = principal.provider_id or f"funder:{principal.funder_id}"
    return intake_api.answer_of(*await intake_api.idempotent(
        sessions, clock, key_owner, idempotency_key, "charges.correct",
        lambda: {"charge_id": charge_id, **body.model_dump(mode="json")}, answer))


@router.get("/charges/{charge_id}/corrections", response_model=list[CorrectionPublic], tags=["charges"],
            responses=error_responses(404))
async def list_corrections(
    charge_id: str, sessions: SessionsDep, principal: Annotated[Principal, require(*READERS)],
) -> list[CorrectionPublic]:
    """The charge's corrections in the order they were made, each with the settlement that offset it."""
    return [CorrectionPublic.of(c) for c in await corrections.corrections_of(sessions, principal, charge_id)]
