"""The provider projection: whom a payout goes to (name, account), from ``ProviderRegistered`` and
``ProviderUpdated`` (an older event than the one applied changes nothing)."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared.events import Envelope, ProviderRegistered, ProviderUpdated

from ..models import ProviderView


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


async def _provider(session: AsyncSession, provider_id: str, at: datetime, *, name: str | None,
                    iban: str | None, bic: str | None) -> None:
    view = await session.get(ProviderView, provider_id, with_for_update=True)
    if view is None:
        view = ProviderView(provider_id=provider_id, updated_at=at)
    elif _utc(view.updated_at) > _utc(at):
        return  # an older event than the one applied: nothing changes
    if name is not None:
        view.name = name
    if iban is not None:
        view.iban, view.bic = iban, bic
    view.updated_at = _utc(at)
    session.add(view)
    await session.flush()


async def on_provider_registered(session: AsyncSession, _env: Envelope, event: ProviderRegistered) -> None:
    await _provider(session, event.provider_id, event.registered_at, name=event.name, iban=event.iban, bic=event.bic)


async def on_provider_updated(session: AsyncSession, _env: Envelope, event: ProviderUpdated) -> None:
    await _provider(session, event.provider_id, event.updated_at, name=event.name, iban=event.iban, bic=event.bic)


HANDLERS = {ProviderRegistered.event_type(): on_provider_registered,
            ProviderUpdated.event_type(): on_provider_updated}
