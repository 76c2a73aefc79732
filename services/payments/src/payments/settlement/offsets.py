"""The corrections a settlement run offsets against a provider's payout from the funder: those no settlement
has offset and no recovery claim has taken yet, taken with the run's locks."""
from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import Charge, ChargeCorrection
from .figures import PendingCorrection


async def pending(session: AsyncSession) -> dict[tuple[str, str], list[PendingCorrection]]:
    """The corrections no settlement has offset yet, per (funder, provider), oldest first; taken with the
    run's locks (``FOR UPDATE SKIP LOCKED``) so two runs never offset one twice."""
    c = ChargeCorrection
    rows = (await session.execute(select(c.id, c.funder_id, c.provider_id, c.amount_cents, c.fee_cents)
                                  .where(c.offset_settlement_id.is_(None), c.recovery_claim_id.is_(None))
                                  .order_by(c.created_at, c.id)
                                  .with_for_update(skip_locked=True))).all()
    out: dict[tuple[str, str], list[PendingCorrection]] = {}
    for r in rows:
        out.setdefault((r.funder_id, r.provider_id), []).append(
            PendingCorrection(r.id, int(r.amount_cents), int(r.fee_cents)))
    return out


async def mark_offset(session: AsyncSession, settlement_id: str, taken: list[PendingCorrection]) -> None:
    if not taken:
        return
    await session.execute(update(ChargeCorrection).where(ChargeCorrection.id.in_([c.id for c in taken]))
                          .values(offset_settlement_id=settlement_id))


async def offset_in(session: AsyncSession, settlement_id: str) -> list[tuple[ChargeCorrection, str]]:
    """The corrections a settlement offset, each with its charge's provider reference."""
    return [tuple(r) for r in (await session.execute(
        select(ChargeCorrection, Charge.provider_reference).join(Charge, Charge.id == ChargeCorrection.charge_id)
        .where(ChargeCorrection.offset_settlement_id == settlement_id)
        .order_by(ChargeCorrection.created_at, ChargeCorrection.id))).all()]
