"""What the vouchers service does with events from other services. ``HANDLERS`` (one event at a time) and
``usage.BATCH_HANDLERS`` (payments' charge events, a run at a time) are how the service declares what it
consumes: its queue's bindings are derived from them."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared.approvals import ApprovalProjection
from seteli_shared.events import Envelope, FunderRegistered

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


# ------------------------------------------------------------------ approvals and their life cycle
#: the approval projection on this service's own table, folded by the code payments' is folded by
APPROVALS = ApprovalProjection(ApprovedProvider)
on_provider_approved = APPROVALS.on_provider_approved
on_provider_suspended = APPROVALS.on_provider_suspended
on_provider_reinstated = APPROVALS.on_provider_reinstated
on_provider_revoked = APPROVALS.on_provider_revoked


def _life_cycle_handlers() -> dict:
    """The life cycle's subscriptions (``lifecycle.py``): the comparison's registry facts. (Payments' charge
    events are folded a run at a time: ``usage.BATCH_HANDLERS``.)"""
    from seteli_shared.events import PriceListPublished, ProviderRegistered, ProviderUpdated

    from . import lifecycle

    return {
        PriceListPublished.event_type(): lifecycle.on_price_list_published,
        ProviderRegistered.event_type(): lifecycle.on_provider_registered,
        ProviderUpdated.event_type(): lifecycle.on_provider_updated,
    }


HANDLERS = {
    FunderRegistered.event_type(): on_funder_registered,
    **APPROVALS.handlers(),
    **_life_cycle_handlers(),
}
