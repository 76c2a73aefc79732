"""Inbox: a consumer records each message id in the same transaction as the message's effect,
so a redelivered message changes nothing."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from .messaging import InboxMessage

T = InboxMessage.__table__


_CLAIM = {
    "postgresql": postgresql.insert(T).on_conflict_do_nothing().returning(T.c.message_id),
    "sqlite": sqlite.insert(T).on_conflict_do_nothing().returning(T.c.message_id),
}


async def claim(session: AsyncSession, consumer: str, message_ids: list[str]) -> set[str]:
    """Record ``message_ids`` as processed by ``consumer``; returns those not seen before."""
    if not message_ids:
        return set()
    now = datetime.now(timezone.utc)
    rows = [{"consumer": consumer, "message_id": m, "received_at": now} for m in dict.fromkeys(message_ids)]
    result = await session.execute(_CLAIM[session.bind.dialect.name], rows)
    return set(result.scalars().all())
