"""The ledger's writes and balances: a ledger transaction with its entries (``post``), each transaction's
entries summing to zero (``postings.balanced``)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared.ids import new_id

from ..models import LedgerEntry, LedgerTransaction


async def post(session: AsyncSession, kind: str, reference: str, postings: list[tuple[str, int]],
               at: datetime) -> None:
    txn_id = new_id()
    session.add(LedgerTransaction(id=txn_id, kind=kind, reference=reference, created_at=at))
    await session.flush()
    await session.execute(LedgerEntry.__table__.insert(), [
        {"transaction_id": txn_id, "account": account, "amount_cents": amount} for account, amount in postings])



async def balances(session: AsyncSession) -> dict[str, int]:
    rows = (await session.execute(select(LedgerEntry.account, func.sum(LedgerEntry.amount_cents))
                                  .group_by(LedgerEntry.account).order_by(LedgerEntry.account))).all()
    return {account: int(total) for account, total in rows}

