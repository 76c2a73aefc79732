"""Parked notices: nobody can receive them yet (a provider's system has not bound its queue, or its webhook
keeps failing). Listed for the operator, counted in ``/health/ready``, tried again on request and every
``NOTICE_PARKED_RETRY_SECONDS`` (``app.jobs``)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import String, delete, func, literal, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import outbox
from seteli_shared.db import unit_of_work
from seteli_shared.logging import get_logger
from seteli_shared.messaging import OutboxMessage
from seteli_shared.schedule import every
from seteli_shared.schemas import PageParams, paginate

from ..models import WebhookDelivery
from .notices import EXCHANGE, FAILED, PARKED, PENDING, wake_on_commit
from .webhooks import unpark_webhooks

log = get_logger(__name__)
Sessions = async_sessionmaker[AsyncSession]


async def retry_parked(sessions: Sessions, provider_id: str | None = None) -> dict[str, int]:
    """Try the parked notices (of one provider, or all) again now: the queue's (the outbox relay publishes
    them; one still unroutable is parked again) and the webhook's. Returns how many of each."""
    async with unit_of_work(sessions) as session:
        return await retry_parked_in(session, provider_id)


async def parked_retry_scheduler(sessions: Sessions, settings) -> None:  # noqa: ANN001
    """Try the parked notices again every ``notice_parked_retry_seconds``, quietly: what it delivers is
    logged (once, by the relay or the worker), a retry that changes nothing adds no line."""
    await every("payments.notices.retry_parked", settings.notice_parked_retry_seconds,
                lambda: retry_parked(sessions), quiet=True)


async def retry_parked_in(session: AsyncSession, provider_id: str | None = None) -> dict[str, int]:
    """``retry_parked`` in the caller's transaction (the webhook worker is woken at once: a delivery it
    finds not yet committed it takes on its next look)."""
    queued = await outbox.retry_parked(session, EXCHANGE, f"notice.{provider_id}." if provider_id else "")
    posted = await unpark_webhooks(session, provider_id)
    if posted:
        wake_on_commit(session)
    if queued or posted:
        log.debug("notices.parked_retried", queue=queued, webhook=posted, provider_id=provider_id)
    return {"queue": queued, "webhook": posted}



async def count_parked(session: AsyncSession) -> int:
    """How many notices are parked (queue and webhook), for ``/health/ready``."""
    O = OutboxMessage.__table__  # noqa: N806
    queued = (await session.execute(select(func.count()).select_from(O).where(outbox.parked(EXCHANGE)))).scalar_one()
    posted = (await session.execute(select(func.count()).select_from(WebhookDelivery).where(
        WebhookDelivery.status == PARKED))).scalar_one()
    return queued + posted


async def readiness_details(runtime) -> dict[str, int]:  # noqa: ANN001
    """``/health/ready``'s ``details``: the parked notices (0 when every provider's system takes its own)."""
    async with runtime.sessions() as session:
        return {"parked_notices": await count_parked(session)}


@dataclass(frozen=True)
class Parked:
    """A parked notice as the operator sees it: which provider, which notice, how often tried, why not
    delivered; never its body."""

    channel: str  # queue | webhook
    id: str  # the message id (queue) or the delivery id (webhook)
    message_id: str
    provider_id: str
    notice_type: str
    subject: str  # the settlement's or the recovery claim's id
    attempts: int
    reason: str
    created_at: datetime


def _parked_rows(provider_id: str | None):  # noqa: ANN202
    """The parked notices of both channels as one selectable (for a stable page order across them)."""
    O = OutboxMessage.__table__  # noqa: N806
    queued = select(literal("queue", String).label("channel"), O.c.message_id.label("id"),
                    O.c.message_id.label("message_id"), O.c.body.label("body"), O.c.attempts.label("attempts"),
                    literal("no_queue_bound", String).label("reason"), O.c.created_at.label("created_at")
                    ).where(outbox.parked(EXCHANGE))
    posted = select(literal("webhook", String), WebhookDelivery.id, WebhookDelivery.message_id, WebhookDelivery.body,
                    WebhookDelivery.attempts, func.coalesce(WebhookDelivery.last_error, "failed"),
                    WebhookDelivery.created_at).where(WebhookDelivery.status == PARKED)
    if provider_id is not None:
        queued = queued.where(O.c.routing_key.startswith(f"{EXCHANGE}/notice.{provider_id}.", autoescape=True))
        posted = posted.where(WebhookDelivery.provider_id == provider_id)
    return union_all(queued, posted).subquery("parked")


async def one_parked(session: AsyncSession, notice_id: str) -> Parked | None:
    """The parked notice ``notice_id`` (a queue notice's message id or a webhook delivery's id), or None."""
    u = _parked_rows(None)
    row = (await session.execute(select(u).where(u.c.id == notice_id).limit(1))).first()
    return _parked(row) if row is not None else None


async def retry_one(session: AsyncSession, notice: Parked) -> None:
    """Make one parked notice due now, in the caller's transaction (as ``retry_parked_in`` does for many)."""
    O = OutboxMessage.__table__  # noqa: N806
    if notice.channel == "queue":
        await session.execute(update(O).where(outbox.parked(EXCHANGE) & (O.c.message_id == notice.id)).values(
            next_attempt_at=datetime.now(timezone.utc)))
        outbox.wake_relay_on_commit(session)
        return
    await session.execute(update(WebhookDelivery).where(
        (WebhookDelivery.id == notice.id) & (WebhookDelivery.status == PARKED)).values(
        status=PENDING, next_attempt_at=datetime.now(timezone.utc)))
    wake_on_commit(session)


#: a discarded webhook delivery's ``last_error`` (its status becomes ``failed``: never tried again)
DISCARDED = "discarded by the operator"


async def discard_one(session: AsyncSession, notice: Parked) -> None:
    """Give one parked notice up, in the caller's transaction: a queue notice's outbox row is removed (it was
    never sent), a webhook delivery becomes ``failed`` (its attempts' log stays)."""
    O = OutboxMessage.__table__  # noqa: N806
    if notice.channel == "queue":
        await session.execute(delete(O).where(outbox.parked(EXCHANGE) & (O.c.message_id == notice.id)))
        return
    await session.execute(update(WebhookDelivery).where(
        (WebhookDelivery.id == notice.id) & (WebhookDelivery.status == PARKED)).values(
        status=FAILED, last_error=DISCARDED, next_attempt_at=None))
    log.info("notices.parked_discarded", channel=notice.channel, id=notice.id, provider_id=notice.provider_id)


async def parked_page(session: AsyncSession, page: PageParams, provider_id: str | None = None
                      ) -> tuple[list[Parked], str | None]:
    """The parked notices, oldest first."""
    u = _parked_rows(provider_id)
    rows, cursor = await paginate(session, select(u), [u.c.created_at, u.c.channel, u.c.id], page, as_rows=True)
    return [_parked(r) for r in rows], cursor


def _parked(row) -> Parked:  # noqa: ANN001
    env = json.loads(row.body)
    return Parked(channel=row.channel, id=row.id, message_id=row.message_id,
                  provider_id=(env.get("data") or {}).get("provider_id", ""), notice_type=env.get("type", ""),
                  subject=env.get("subject") or "", attempts=row.attempts, reason=row.reason,
                  created_at=row.created_at)
