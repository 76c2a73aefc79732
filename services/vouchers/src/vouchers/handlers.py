"""What the vouchers service does with events from other services."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared.events import Envelope, ProviderApproved

from .models import ApprovedProvider


async def on_provider_approved(session: AsyncSession, _env: Envelope, event: ProviderApproved) -> None:
    key = (event.funder_id, event.provider_id, event.category)
    if await session.get(ApprovedProvider, key) is None:
        session.add(ApprovedProvider(funder_id=event.funder_id, provider_id=event.provider_id,
                                     category=event.category, approved_at=event.approved_at))
        await session.flush()


HANDLERS = {ProviderApproved.event_type(): on_provider_approved}
