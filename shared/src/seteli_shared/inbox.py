"""Inbox: a consumer records each message id in the same transaction as the message's effect,
so a redelivered message changes nothing."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from .messaging import InboxMessage

T = InboxMessage.__table__


async def claim(session: AsyncSession, consumer: str, message_ids: list[str]) -> set[str]:
    """Record ``message_ids`` as processed by ``consumer``; returns those not seen before."""
    if not message_ids:
        return set()
    now = datetime.now(timezone.utc)
    dialect = session.bind.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(T)
        .values([{"consumer": consumer, "message_id": m, "received_at": now} for m in dict.fromkeys(message_ids)])
        .on_conflict_do_nothing()
        .returning(T.c.message_id)
    )
    return set((await session.execute(stmt)).scalars().all())
