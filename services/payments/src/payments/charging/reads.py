"""Charges as their callers may read them, each caller its own tenant's."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared.auth import TenantScope
from seteli_shared.errors import NotFound
from seteli_shared.schemas import PageParams, paginate

from ..models import Charge

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class ChargeFilter:
    voucher_id: str | None = None
    status: str | None = None
    service_date_from: date | None = None
    service_date_to: date | None = None
    funder_id: str | None = None
    provider_id: str | None = None


async def charges_page(sessions: Sessions, scope: TenantScope, f: ChargeFilter,
                       page: PageParams) -> tuple[list[Charge], str | None]:
    """The caller's tenant's charges in the order they were accepted."""
    q = scope.restrict(select(Charge), funder=Charge.funder_id, provider=Charge.provider_id)
    for column, value in ((Charge.voucher_id, f.voucher_id), (Charge.status, f.status),
                          (Charge.funder_id, f.funder_id), (Charge.provider_id, f.provider_id)):
        if value is not None:
            q = q.where(column == value)
    if f.service_date_from is not None:
        q = q.where(Charge.service_date >= f.service_date_from)
    if f.service_date_to is not None:
        q = q.where(Charge.service_date <= f.service_date_to)
    async with sessions() as session:
        return await paginate(session, q, [Charge.accepted_at, Charge.id], page)


async def get_charge(sessions: Sessions, charge_id: str) -> Charge:
    async with sessions() as session:
        charge = await session.get(Charge, charge_id)
    if charge is None:
        raise NotFound("charge")
    return charge
