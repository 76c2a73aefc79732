"""Inbox: a consumer records each message id in the same transaction as the message's effect,
so a redelivered message changes nothing. A batch's ids are claimed in one statement
(``rows.RowsInsert``: on PostgreSQL one prepared statement whatever the batch's size)."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.ext.asyncio import AsyncSession

from .messaging import InboxMessage
from .rows import RowsInsert

T = InboxMessage.__table__

_CLAIM = RowsInsert(T, ["consumer", "message_id", "received_at"], conflict=["consumer", "message_id"],
                    returning=["message_id"])


async def claim(session: AsyncSession, consumer: str, message_ids: list[str]) -> set[str]:
    """Record ``message_ids`` as processed by ``consumer``; returns those not seen before."""
    if not message_ids:
        return set()
    now = datetime.now(timezone.utc)
    rows = [{"consumer": consumer, "message_id": m, "received_at": now} for m in dict.fromkeys(message_ids)]
    result = await _CLAIM.execute(session, rows)
    return set(result.scalars().all())
