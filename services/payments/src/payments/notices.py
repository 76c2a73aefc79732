"""Notices to providers' systems: settlement notices, and recovery claims (``banking``).

- **AMQP**: each settlement's notice is recorded in the outbox (``outbox.add_message``) for the topic
  exchange ``<ns>.notices`` with routing key ``notice.<provider_id>.settlement``. A provider's system reads
  only its own queue ``<ns>.notices.<provider_id>`` (``seteli-broker add-provider-system``).
- **Webhooks**, for providers without an AMQP consumer: a provider's URL (``PUT /providers/{id}/webhook``,
  the HMAC key shown once). The same notice is recorded, in the same transaction, as a delivery; a worker
  in the service POSTs it signed with HMAC-SHA256 (header ``X-Seteli-Signature: t=<unix time>,v1=<hex>``
  over ``"<t>." + body``), retries with exponential back-off and logs every attempt
  (``GET /providers/{id}/webhook/deliveries``).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import httpx
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import ids
from seteli_shared.db import unit_of_work
from seteli_shared.events import Envelope
from seteli_shared.ids import new_id
from seteli_shared.logging import correlation_id_var, get_logger
from seteli_shared.outbox import add_message

from .models import Webhook, WebhookAttempt, WebhookDelivery

log = get_logger(__name__)
Sessions = async_sessionmaker[AsyncSession]

EXCHANGE = "notices"
NOTICE_TYPE = "fi.seteli.notice.settlement.v1"
SIGNATURE_HEADER = "X-Seteli-Signature"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


CLAIM_NOTICE_TYPE = "fi.seteli.notice.recovery-claim.v1"


def routing_key(provider_id: str, kind: str = "settlement") -> str:
    return f"notice.{provider_id}.{kind}"


class SettlementNotice(BaseModel):
    """A provider's settlement notice: one settlement with one funder, what it is paid and under which
    reference. Amounts in cents (EUR); the services are VAT-exempt (Finnish VAT Act 34 §)."""

    model_config = ConfigDict(extra="forbid")

    settlement_id: str
    run_id: str
    provider_id: str
    funder_id: str
    charge_count: int
    gross_cents: int
    fee_cents: int
    net_cents: int
    fee_rate: Decimal
    currency: str = "EUR"
    reference: str = Field(description="the RF creditor reference (ISO 11649) the payment carries")
    payout_reason: str = Field(description="minimum_reached, guarantee_due or manual")
    vat_exempt: bool = True
    created_at: datetime
    statement_path: str = Field(description="GET this path on the payments API for the statement")
    correction_count: int = Field(default=0, description="corrections of earlier settlements taken off this one "
                                  "(negative lines of the statement; gross, fee and net are after them)")


EXAMPLE_NOTICE = {
    "settlement_id": "0b7e7c1e-52a4-4d8e-9d55-2c7d3c1f9a10", "run_id": "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
    "provider_id": "2d9f6a7b-8c1d-4e2f-9a3b-4c5d6e7f8a9b", "funder_id": "091", "charge_count": 3,
    "gross_cents": 30000, "fee_cents": 1500, "net_cents": 28500, "fee_rate": "0.05", "currency": "EUR",
    "reference": "RF710B7E7C1E52A44D8E9D55", "payout_reason": "minimum_reached", "vat_exempt": True,
    "created_at": "2026-06-20T03:00:00Z",
    "statement_path": "/settlements/0b7e7c1e-52a4-4d8e-9d55-2c7d3c1f9a10/statement"}


class RecoveryClaimNotice(BaseModel):
    """A provider's recovery claim: corrections of its settled charges with one funder that no payout
    could offset, to be paid back to the operator's account with the RF reference by ``due_on``. Amounts
    in cents (EUR)."""

    model_config = ConfigDict(extra="forbid")

    claim_id: str
    provider_id: str
    funder_id: str
    reason: str = Field(description="overdue (no payout offset the corrections in time) | requested (staff)")
    correction_count: int
    amount_cents: int = Field(description="the funder's amount the corrections removed")
    fee_cents: int = Field(description="the operator's fee given back")
    net_cents: int = Field(description="what the provider pays back")
    currency: str = "EUR"
    reference: str = Field(description="the RF creditor reference (ISO 11649) the repayment must carry")
    pay_to_iban: str = Field(description="the operator's account the repayment goes to")
    due_on: date
    created_at: datetime
    claim_path: str = Field(description="GET this path on the payments API for the claim and its corrections")


EXAMPLE_CLAIM_NOTICE = {
    "claim_id": "3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b9a", "provider_id": "2d9f6a7b-8c1d-4e2f-9a3b-4c5d6e7f8a9b",
    "funder_id": "091", "reason": "overdue", "correction_count": 1, "amount_cents": 10000, "fee_cents": 500,
    "net_cents": 9500, "currency": "EUR", "reference": "RF763C2B1A098F7E4D6C9B5A4", "pay_to_iban": "FI4950009420028730",
    "due_on": "2026-09-03", "created_at": "2026-08-20T03:00:00Z",
    "claim_path": "/recovery-claims/3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b9a"}


async def send_notice(session: AsyncSession, notice: SettlementNotice | RecoveryClaimNotice, now: datetime) -> Envelope:
    """Record the notice in the caller's transaction: for the provider's AMQP queue (outbox) and, when
    the provider has a webhook, as a delivery for the webhook worker."""
    if isinstance(notice, RecoveryClaimNotice):
        notice_type, subject, kind = CLAIM_NOTICE_TYPE, notice.claim_id, "recovery-claim"
    else:
        notice_type, subject, kind = NOTICE_TYPE, notice.settlement_id, "settlement"
    eid = new_id()
    env = Envelope(id=eid, source="/seteli/payments", type=notice_type, subject=subject, time=now,
                   data=notice.model_dump(mode="json"), correlationid=correlation_id_var.get() or eid)
    await add_message(session, env, EXCHANGE, routing_key(notice.provider_id, kind))
    hook = await session.get(Webhook, notice.provider_id)
    if hook is not None:
        session.add(WebhookDelivery(
            id=new_id(), provider_id=notice.provider_id, message_id=env.id, notice_type=notice_type, url=hook.url,
            body=env.model_dump_json(), status=PENDING, attempts=0, next_attempt_at=now, created_at=now))
        _wake()
    return env


# ------------------------------------------------------------------ webhooks
def new_secret() -> str:
    """A webhook's signing secret (``ids``: never read as a personal identity code where it is stored)."""
    return ids.new_secret(32, prefix="whsec_")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Seteli-Signature`` value: ``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance_seconds: int = 300, now: float | None = None) -> bool:
    """What a provider's receiver does: the signature matches and is recent."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - t) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, t, body), header)


async def set_webhook(session: AsyncSession, provider_id: str, url: str, now: datetime) -> Webhook:
    """Set (or replace) the provider's webhook with a new secret; pending deliveries go to the new URL."""
    hook = await session.get(Webhook, provider_id, with_for_update=True)
    if hook is None:
        hook = Webhook(provider_id=provider_id, url=url, secret=new_secret(), created_at=now, updated_at=now)
    else:
        hook.url, hook.secret, hook.updated_at = url, new_secret(), now
    session.add(hook)
    await session.flush()
    return hook


def backoff(attempts: int, base_seconds: float) -> timedelta:
    return timedelta(seconds=min(3600.0, base_seconds * 2 ** max(attempts - 1, 0)))


_wakeups: set[asyncio.Event] = set()


def _wake() -> None:
    for ev in list(_wakeups):
        ev.set()


class WebhookWorker:
    """POSTs due deliveries; on PostgreSQL several workers never take the same one (SKIP LOCKED)."""

    def __init__(self, sessions: Sessions, settings, postgres: bool):  # noqa: ANN001
        self.sessions, self.settings, self.postgres = sessions, settings, postgres
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
            hooks = {h.provider_id: h for h in (await session.execute(select(Webhook).where(
                Webhook.provider_id.in_({d.provider_id for d in due})))).scalars()}
            results = await asyncio.gather(*(self._post(client, d, hooks.get(d.provider_id)) for d in due))
            for d, (status_code, error, took_ms, url) in zip(due, results):
                d.attempts += 1
                d.url = url or d.url
                d.last_status_code, d.last_error = status_code, error
                session.add(WebhookAttempt(delivery_id=d.id, attempt=d.attempts, at=now, status_code=status_code,
                                           error=error, duration_ms=took_ms))
                if status_code is not None and 200 <= status_code < 300:
                    d.status, d.delivered_at, d.next_attempt_at = DELIVERED, datetime.now(timezone.utc), None
                elif url is None or d.attempts >= self.settings.webhook_max_attempts:
                    d.status, d.next_attempt_at = FAILED, None
                else:
                    d.next_attempt_at = now + backoff(d.attempts, self.settings.webhook_retry_base_seconds)
                log.info("webhook.attempt", delivery_id=d.id, provider_id=d.provider_id, attempt=d.attempts,
                         status_code=status_code, outcome=d.status)
        return len(due)

    async def _post(self, client: httpx.AsyncClient, d: WebhookDelivery,
                    hook: Webhook | None) -> tuple[int | None, str | None, int, str | None]:
        if hook is None:
            return None, "webhook_removed", 0, None
        body = d.body.encode()
        headers = {"content-type": "application/cloudevents+json; charset=utf-8",
                   SIGNATURE_HEADER: sign(hook.secret, int(time.time()), body),
                   "X-Seteli-Delivery": d.id, "X-Seteli-Attempt": str(d.attempts + 1),
                   "X-Seteli-Message-Id": d.message_id}
        started = time.monotonic()
        try:
            r = await client.post(hook.url, content=body, headers=headers,
                                  timeout=self.settings.webhook_timeout_seconds)
            error = None if r.is_success else f"http_{r.status_code}"
            return r.status_code, error, int((time.monotonic() - started) * 1000), hook.url
        except httpx.HTTPError as exc:
            return None, type(exc).__name__[:300], int((time.monotonic() - started) * 1000), hook.url

    async def run(self) -> None:
        _wakeups.add(self._wakeup)
        try:
            async with httpx.AsyncClient(follow_redirects=False) as client:
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
            _wakeups.discard(self._wakeup)

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
