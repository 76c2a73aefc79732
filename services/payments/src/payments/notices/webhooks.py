"""Providers' webhooks for settlement notices: set with a new secret, and the worker that POSTs due deliveries
to the address it has just checked (``egress``), signed, retried with back-off, parked after
``WEBHOOK_MAX_ATTEMPTS``."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared.clock import SYSTEM_CLOCK, Clock
from seteli_shared.db import unit_of_work
from seteli_shared.errors import NotFound
from seteli_shared.logging import get_logger

from ..models import Webhook, WebhookAttempt, WebhookDelivery
from . import egress
from ..metrics import count_webhook
from .notices import DELIVERED, FAILED, PARKED, PENDING, SIGNATURE_HEADER, new_secret, sign, wake_on_commit, wakeups

log = get_logger(__name__)
Sessions = async_sessionmaker[AsyncSession]


async def set_webhook(session: AsyncSession, provider_id: str, url: str, now: datetime) -> Webhook:
    """Set (or replace) the provider's webhook with a new secret; pending deliveries go to the new URL."""
    hook = await session.get(Webhook, provider_id, with_for_update=True)
    if hook is None:
        hook = Webhook(provider_id=provider_id, url=url, secret=new_secret(), created_at=now, updated_at=now)
    else:  # set anew (a leaked secret): the old one stops signing at once
        hook.url, hook.secret, hook.updated_at = url, new_secret(), now
        hook.previous_secret, hook.previous_secret_until = None, None
    session.add(hook)
    await session.flush()
    # a new URL is the provider's answer to deliveries that could not reach the old one: they are tried again
    if await unpark_webhooks(session, provider_id):
        wake_on_commit(session)
    return hook


async def rotate_secret(session: AsyncSession, provider_id: str, now: datetime, grace: timedelta) -> Webhook:
    """A new secret for the provider's webhook; the current one keeps signing beside it for ``grace``
    (deliveries carry both signatures), then is dropped. Rotating again within a grace drops the oldest at
    once: at most two secrets sign. ``NotFound`` when the provider has no webhook."""
    hook = await session.get(Webhook, provider_id, with_for_update=True)
    if hook is None:
        raise NotFound("webhook")
    hook.previous_secret, hook.previous_secret_until = (hook.secret, now + grace) if grace > timedelta(0) else (None, None)
    hook.secret, hook.updated_at = new_secret(), now
    session.add(hook)
    await session.flush()
    return hook


async def drop_expired_secrets(session: AsyncSession, provider_ids: set[str], now: datetime) -> int:
    """The previous secrets of these webhooks whose grace has ended, dropped (one conditional statement: a
    rotation made meanwhile has a grace still running and is left alone)."""
    result = await session.execute(update(Webhook).where(
        Webhook.provider_id.in_(provider_ids), Webhook.previous_secret_until.is_not(None),
        Webhook.previous_secret_until <= now).values(previous_secret=None, previous_secret_until=None))
    return result.rowcount or 0


def backoff(attempts: int, base_seconds: float) -> timedelta:
    return timedelta(seconds=min(3600.0, base_seconds * 2 ** max(attempts - 1, 0)))


class WebhookWorker:
    """POSTs due deliveries; on PostgreSQL several workers never take the same one (SKIP LOCKED).
    ``resolver`` and ``verify`` (the TLS trust) are the system's unless a test gives its own."""

    def __init__(self, sessions: Sessions, settings, postgres: bool,  # noqa: ANN001
                 resolver: egress.Resolver | None = None, verify: object = True, clock: Clock = SYSTEM_CLOCK):
        self.sessions, self.settings, self.postgres = sessions, settings, postgres
        self.clock = clock  # the app's: whether a rotated secret's grace has ended
        self.policy, self.resolver, self.verify = egress.Policy.of(settings), resolver, verify
        self._wakeup = asyncio.Event()
        self._stopping = False

    async def deliver_due(self, client: httpx.AsyncClient, batch: int = 50) -> int:
        now = datetime.now(timezone.utc)
        async with unit_of_work(self.sessions) as session:
            q = (select(WebhookDelivery).where(WebhookDelivery.status == PENDING, or_(
                WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= now))
                .order_by(WebhookDelivery.created_at, WebhookDelivery.id).limit(batch))
            if self.postgres:
                q = q.with_for_update(skip_locked=True)
            due = list((await session.execute(q)).scalars())
            if not due:
                return 0
            providers = {d.provider_id for d in due}
            await drop_expired_secrets(session, providers, self.clock.now())
            hooks = {h.provider_id: h for h in (await session.execute(select(Webhook).where(
                Webhook.provider_id.in_(providers)))).scalars()}
            results = await asyncio.gather(*(self._post(client, d, hooks.get(d.provider_id)) for d in due))
            for d, result in zip(due, results):
                self._record(session, d, *result, at=now)
        for d in due:  # committed
            count_webhook("retrying" if d.status == PENDING else d.status)
        return len(due)

    def _record(self, session: AsyncSession, d: WebhookDelivery, status_code: int | None, error: str | None,
                took_ms: int, url: str | None, *, at: datetime) -> None:
        """One attempt's outcome: delivered; failed for good (the webhook is gone); parked after the last of
        ``webhook_max_attempts`` (logged once; a retry of a parked one that fails again parks it quietly);
        else tried again after its back-off."""
        was_parked = d.attempts >= self.settings.webhook_max_attempts
        d.attempts += 1
        d.url = url or d.url
        d.last_status_code, d.last_error = status_code, error
        session.add(WebhookAttempt(delivery_id=d.id, attempt=d.attempts, at=at, status_code=status_code,
                                   error=error, duration_ms=took_ms))
        facts = dict(delivery_id=d.id, provider_id=d.provider_id, attempts=d.attempts)
        if status_code is not None and 200 <= status_code < 300:
            d.status, d.delivered_at, d.next_attempt_at = DELIVERED, datetime.now(timezone.utc), None
            if was_parked:
                log.info("webhook.parked_delivered", **facts)
        elif url is None:
            d.status, d.next_attempt_at = FAILED, None
        elif d.attempts >= self.settings.webhook_max_attempts:
            d.status, d.next_attempt_at = PARKED, None
            if not was_parked:
                log.warning("webhook.parked", reason=error, **facts)
        else:
            d.next_attempt_at = at + backoff(d.attempts, self.settings.webhook_retry_base_seconds)
        (log.debug if was_parked else log.info)("webhook.attempt", status_code=status_code, outcome=d.status,
                                                 **facts)

    async def _post(self, client: httpx.AsyncClient, d: WebhookDelivery,
                    hook: Webhook | None) -> tuple[int | None, str | None, int, str | None]:
        if hook is None:
            return None, "webhook_removed", 0, None
        body = d.body.encode()
        headers = {"content-type": "application/cloudevents+json; charset=utf-8",
                   SIGNATURE_HEADER: sign(hook.signing_secrets(self.clock.now()), int(time.time()), body),
                   "X-Seteli-Delivery": d.id, "X-Seteli-Attempt": str(d.attempts + 1),
                   "X-Seteli-Message-Id": d.message_id}
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            # checked again now (the name may resolve elsewhere than when it was set) and connected to as checked
            target = await egress.check(hook.url, self.policy, self.resolver)
            answer = await egress.post(client, target, body, headers, self.policy)
        except egress.WebhookRefused as exc:
            return None, exc.reason, took(), hook.url
        except (TimeoutError, httpx.TimeoutException):
            return None, "timeout", took(), hook.url
        except Exception as exc:  # noqa: BLE001  (one receiver's fault must not stop the others' deliveries)
            return None, type(exc).__name__[:300], took(), hook.url
        error = None if 200 <= answer.status_code < 300 else f"http_{answer.status_code}"
        return answer.status_code, error, took(), hook.url

    async def run(self) -> None:
        wakeups.add(self._wakeup)
        try:
            async with egress.client(self.verify) as client:
                while not self._stopping:
                    try:
                        handled = await self.deliver_due(client)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001  (database down: keep trying)
                        log.warning("webhook.worker_error", error=repr(exc))
                        handled = 0
                    if handled == 0:
                        self._wakeup.clear()
                        try:
                            await asyncio.wait_for(self._wakeup.wait(), self.settings.webhook_poll_seconds)
                        except asyncio.TimeoutError:
                            pass
        finally:
            wakeups.discard(self._wakeup)

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()



async def unpark_webhooks(session: AsyncSession, provider_id: str | None = None) -> int:
    q = update(WebhookDelivery).where(WebhookDelivery.status == PARKED)
    if provider_id is not None:
        q = q.where(WebhookDelivery.provider_id == provider_id)
    result = await session.execute(q.values(status=PENDING, next_attempt_at=datetime.now(timezone.utc)))
    return result.rowcount or 0
