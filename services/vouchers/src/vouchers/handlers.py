"""What the vouchers service does with events from other services. ``HANDLERS`` (one event at a time) and
``usage.BATCH_HANDLERS`` (payments' charge events, a run at a time) are how the service declares what it
consumes: its queue's bindings are derived from them."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared.events import (Envelope, FunderRegistered, ProviderApproved, ProviderReinstated, ProviderRevoked,
                                  ProviderSuspended)

from . import domain
from .models import ApprovedProvider, Funder, approval_state


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
def _utc(at: datetime) -> datetime:
    """The registry's times compared as UTC (a time without a zone is taken to be UTC)."""
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


async def _fold(session: AsyncSession, funder_id: str, provider_id: str, category: str, fold) -> None:  # noqa: ANN001
    """Apply a pure fold of the approval's state to its row (locked: one event at a time per approval)."""
    key = (funder_id, provider_id, category)
    row = await session.get(ApprovedProvider, key, with_for_update=True)
    before = approval_state(row)
    after = fold(before)
    if after == before:
        return  # a redelivery or a stale event: nothing changes
    if row is None:
        row = ApprovedProvider(funder_id=funder_id, provider_id=provider_id, category=category)
    row.approval_id, row.approved_at, row.status = after.approval_id, after.approved_at, after.status
    row.not_in_force_from, row.status_changed_at, row.status_reason = (after.not_in_force_from, after.changed_at,
                                                                       after.reason)
    session.add(row)
    await session.flush()


async def on_provider_approved(session: AsyncSession, _env: Envelope, event: ProviderApproved) -> None:
    await _fold(session, event.funder_id, event.provider_id, event.category,
                lambda s: domain.apply_approved(s, event.approval_id, _utc(event.approved_at)))


async def on_provider_suspended(session: AsyncSession, _env: Envelope, event: ProviderSuspended) -> None:
    change = domain.LifeCycleChange(domain.SUSPENDED, event.approval_id, _utc(event.suspended_at), event.effective_from,
                                    event.reason)
    await _fold(session, event.funder_id, event.provider_id, event.category, lambda s: domain.apply_change(s, change))


async def on_provider_reinstated(session: AsyncSession, _env: Envelope, event: ProviderReinstated) -> None:
    change = domain.LifeCycleChange(domain.APPROVED, event.approval_id, _utc(event.reinstated_at))
    await _fold(session, event.funder_id, event.provider_id, event.category, lambda s: domain.apply_change(s, change))


async def on_provider_revoked(session: AsyncSession, _env: Envelope, event: ProviderRevoked) -> None:
    change = domain.LifeCycleChange(domain.REVOKED, event.approval_id, _utc(event.revoked_at), event.effective_from,
                                    event.reason)
    await _fold(session, event.funder_id, event.provider_id, event.category, lambda s: domain.apply_change(s, change))


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
    ProviderApproved.event_type(): on_provider_approved,
    ProviderSuspended.event_type(): on_provider_suspended,
    ProviderReinstated.event_type(): on_provider_reinstated,
    ProviderRevoked.event_type(): on_provider_revoked,
    **_life_cycle_handlers(),
}
