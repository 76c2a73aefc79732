"""Folding events into the read models. Every handler first archives the event."""
from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared.events import (ChargeAccepted, ChargeSettled, Envelope, Event, ProviderApproved,
                                  SettlementCreated, VoucherIssued, VoucherProviderChosen)
from seteli_shared.logging import get_logger
from seteli_shared.money import to_hundredths

from .models import FunderFigures, FunderMember, ReceivedEvent

F = FunderFigures
log = get_logger(__name__)


async def archive(session: AsyncSession, env: Envelope, _event: Event | None = None) -> None:
    session.add(ReceivedEvent(id=env.id, type=env.type, time=env.time, envelope=env.model_dump_json()))
    await session.flush()
    log.info("report.event_received", type=env.type, event_id=env.id, subject=env.subject)


async def bump(session: AsyncSession, funder_id: str, **deltas: int) -> None:
    if await session.get(FunderFigures, funder_id) is None:
        session.add(FunderFigures(funder_id=funder_id))
        await session.flush()
    await session.execute(update(F).where(F.funder_id == funder_id).values(
        **{name: getattr(F, name) + delta for name, delta in deltas.items()}))


async def first_time(session: AsyncSession, funder_id: str, kind: str, member_id: str) -> int:
    """1 when this provider or client is new to the funder, else 0."""
    if await session.get(FunderMember, (funder_id, kind, member_id)) is not None:
        return 0
    session.add(FunderMember(funder_id=funder_id, kind=kind, member_id=member_id))
    await session.flush()
    return 1


async def on_provider_approved(session: AsyncSession, env: Envelope, e: ProviderApproved) -> None:
    await archive(session, env)
    new = await first_time(session, e.funder_id, "provider", e.provider_id)
    await bump(session, e.funder_id, approvals=1, providers_approved=new)


async def on_voucher_issued(session: AsyncSession, env: Envelope, e: VoucherIssued) -> None:
    await archive(session, env)
    new = await first_time(session, e.funder_id, "client", e.client_ref)
    await bump(session, e.funder_id, vouchers_issued=1, clients=new)


async def on_provider_chosen(session: AsyncSession, env: Envelope, e: VoucherProviderChosen) -> None:
    await archive(session, env)
    await bump(session, e.funder_id, provider_choices=1)


async def on_charge_accepted(session: AsyncSession, env: Envelope, e: ChargeAccepted) -> None:
    await archive(session, env)
    await bump(session, e.funder_id, charges_accepted=1, units_charged_x100=to_hundredths(e.units),
               charged_cents=e.amount_cents, own_share_cents=e.own_share_cents)


async def on_charge_settled(session: AsyncSession, env: Envelope, e: ChargeSettled) -> None:
    await archive(session, env)
    await bump(session, e.funder_id, charges_settled=1, settled_gross_cents=e.gross_cents, fee_cents=e.fee_cents,
               net_cents=e.net_cents)


async def on_settlement_created(session: AsyncSession, env: Envelope, e: SettlementCreated) -> None:
    await archive(session, env)
    await bump(session, e.funder_id, settlements=1)


HANDLERS = {
    ProviderApproved.event_type(): on_provider_approved,
    VoucherIssued.event_type(): on_voucher_issued,
    VoucherProviderChosen.event_type(): on_provider_chosen,
    ChargeAccepted.event_type(): on_charge_accepted,
    ChargeSettled.event_type(): on_charge_settled,
    SettlementCreated.event_type(): on_settlement_created,
}
