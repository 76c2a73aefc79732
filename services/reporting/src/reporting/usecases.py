"""Reporting's use cases. Its state changes are the event handlers (``handlers.py``: each folds one
event into the read models in the consumer's transaction); what its API does is read them."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import select

from seteli_shared.auth import TenantScope
from seteli_shared.schemas import PageParams, paginate

from .models import FunderFigures

Sessions = async_sessionmaker[AsyncSession]


async def funder_figures(sessions: Sessions, funder_id: str) -> FunderFigures:
    """A funder's figures; all zero for a funder no event has named yet."""
    async with sessions() as session:
        return await session.get(FunderFigures, funder_id) or FunderFigures(funder_id=funder_id)


async def figures_page(sessions: Sessions, scope: TenantScope, page: PageParams) -> tuple[list[FunderFigures], str | None]:
    async with sessions() as session:
        q = scope.restrict(select(FunderFigures), funder=FunderFigures.funder_id)
        return await paginate(session, q, [FunderFigures.funder_id], page)
