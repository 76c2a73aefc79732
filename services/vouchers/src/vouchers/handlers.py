"""What the vouchers service does with events from other services. ``HANDLERS`` is how the service
declares what it consumes: its queue's bindings are derived from it."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared.events import Envelope, FunderRegistered, ProviderApproved

from .models import ApprovedProvider, Funder


async def on_funder_registered(session: AsyncSession, _env: Envelope, event: FunderRegistered) -> None:
    """Vouchers are issued only for funders the registry has announced."""
    funder = await session.get(Funder, event.funder_id)
    if funder is None:
        session.add(Funder(funder_id=event.funder_id, name=event.name, kind=event.kind,
                           registered_at=event.registered_at))
    else:  # a redelivery, or the registry announcing it again: its latest word counts
        funder.name, funder.kind = event.name, event.kind
        session.add(funder)
    await session.flush()


async def on_provider_approved(session: AsyncSession, _env: Envelope, event: ProviderApproved) -> None:
    key = (event.funder_id, event.provider_id, event.category)
    if await session.get(ApprovedProvider, key) is None:
        session.add(ApprovedProvider(funder_id=event.funder_id, provider_id=event.provider_id,
                                     category=event.category, approved_at=event.approved_at))
        await session.flush()


HANDLERS = {
    FunderRegistered.event_type(): on_funder_registered,
    ProviderApproved.event_type(): on_provider_approved,
}
