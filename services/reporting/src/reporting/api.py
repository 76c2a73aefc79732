"""Reporting HTTP API: per-funder figures folded from events (routes only: authorise, call a use case)."""
from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter
from pydantic import BaseModel
from typing import Annotated

from seteli_shared.auth import FUNDER_STAFF, Principal, Role, TenantScope, ensure_visible, require, tenant_scope
from seteli_shared.schemas import Page, PageDep
from seteli_shared.money import from_hundredths
from seteli_shared.service import SessionsDep

from . import usecases
from .models import FunderFigures

router = APIRouter(tags=["reports"])


class FiguresPublic(BaseModel):
    funder_id: str
    providers_approved: int
    approvals: int
    vouchers_issued: int
    clients: int
    provider_choices: int
    charges_accepted: int
    units_charged: Decimal
    charged_cents: int
    own_share_cents: int
    charges_settled: int
    settlements: int
    settled_gross_cents: int
    fee_cents: int
    net_cents: int

    @classmethod
    def of(cls, f: FunderFigures) -> "FiguresPublic":
        return cls(**f.model_dump(exclude={"units_charged_x100"}), units_charged=from_hundredths(f.units_charged_x100))


@router.get("/funders/{funder_id}/figures", response_model=FiguresPublic)
async def funder_figures(
    funder_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, *FUNDER_STAFF)],
) -> FiguresPublic:
    """Providers approved, vouchers issued, units and euros charged and settled, fees (cents)."""
    ensure_visible(principal, "funder", funder_id=funder_id)
    return FiguresPublic.of(await usecases.funder_figures(sessions, funder_id))


@router.get("/figures", response_model=Page[FiguresPublic])
async def all_figures(
    sessions: SessionsDep, page: PageDep,
    scope: Annotated[TenantScope, tenant_scope(Role.OPERATOR, *FUNDER_STAFF)],
) -> Page[FiguresPublic]:
    """Funders' figures, by funder: every funder's for operator staff, a funder's staff their own."""
    rows, cursor = await usecases.figures_page(sessions, scope, page)
    return Page(items=[FiguresPublic.of(f) for f in rows], next_cursor=cursor)
