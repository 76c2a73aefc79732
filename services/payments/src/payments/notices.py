"""Notices to providers' systems: settlement notices, and recovery claims (``banking``).

- **AMQP**: each settlement's notice is recorded in the outbox (``outbox.add_message``) for the topic
  exchange ``<ns>.notices`` with routing key ``notice.<provider_id>.settlement``. A provider's system reads
  only its own queue ``<ns>.notices.<provider_id>`` (``seteli-broker add-provider-system``).
- **Webhooks**, for providers without an AMQP consumer: a provider's URL (``PUT /providers/{id}/webhook``,
  the HMAC key shown once), https at a public address only (``egress``). The same notice is recorded, in
  the same transaction, as a delivery; a worker in the service POSTs it signed with HMAC-SHA256 (header
  ``X-Seteli-Signature: t=<unix time>,v1=<hex>`` over ``"<t>." + body``) to the address it has just checked
  the URL's host to resolve to, retries with exponential back-off and logs every attempt
  (``GET /providers/{id}/webhook/deliveries``).
- **Parked notices**: nobody can receive them yet. A notice for a provider whose system has not bound its
  queue comes back unroutable; after ``OUTBOX_PARK_AFTER_ATTEMPTS`` the outbox relay parks it (see
  ``seteli_shared.outbox``). A webhook delivery that has failed ``WEBHOOK_MAX_ATTEMPTS`` times is parked the
  same way. Either is logged once when parked and once when delivered at last, listed for the operator
  (``GET /notices/parked``, counted in ``/health/ready``), and tried again by ``POST /notices/parked/retry``
  (after ``seteli-broker add-provider-system``), by setting the provider's webhook anew, and every
  ``NOTICE_PARKED_RETRY_SECONDS`` (an hour) without a log line of its own: whether a queue is bound only
  the publish itself tells (the broker routes it or returns it), so a retry is that publish.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import httpx
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import String, func, literal, or_, select, union_all, update
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import ids, outbox
from seteli_shared.db import unit_of_work
from seteli_shared.events import Envelope
from seteli_shared.ids import new_id
from seteli_shared.logging import correlation_id_var, get_logger
from seteli_shared.messaging import OutboxMessage
from seteli_shared.outbox import add_message
from seteli_shared.schedule import every
from seteli_shared.schemas import PageParams, paginate

from . import egress
from .models import Webhook, WebhookAttempt, WebhookDelivery

log = get_logger(__name__)
Sessions = async_sessionmaker[AsyncSession]

EXCHANGE = "notices"
NOTICE_TYPE = "fi.seteli.notice.settlement.v1"
SIGNATURE_HEADER = "X-Seteli-Signature"
#: a webhook delivery: pending (due or waiting for its back-off), delivered, parked (failed every attempt: tried
#: again only by a retry of parked notices), failed (the provider's webhook is gone)
PENDING, DELIVERED, PARKED, FAILED = "pending", "delivered", "parked", "failed"


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
    # a new URL is the provider's answer to deliveries that could not reach the old one: they are tried again
    if await _unpark_webhooks(session, provider_id):
        _wake_on_commit(session)
    return hook


def backoff(attempts: int, base_seconds: float) -> timedelta:
    return timedelta(seconds=min(3600.0, base_seconds * 2 ** max(attempts - 1, 0)))


_wakeups: set[asyncio.Event] = set()


def _wake() -> None:
    for ev in list(_wakeups):
        ev.set()


class WebhookWorker:
    """POSTs due deliveries; on PostgreSQL several workers never take the same one (SKIP LOCKED).
    ``resolver`` and ``verify`` (the TLS trust) are the system's unless a test gives its own."""

    def __init__(self, sessions: Sessions, settings, postgres: bool,  # noqa: ANN001
                 resolver: egress.Resolver | None = None, verify: object = True):
        self.sessions, self.settings, self.postgres = sessions, settings, postgres
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
            hooks = {h.provider_id: h for h in (await session.execute(select(Webhook).where(
                Webhook.provider_id.in_({d.provider_id for d in due})))).scalars()}
            results = await asyncio.gather(*(self._post(client, d, hooks.get(d.provider_id)) for d in due))
            for d, result in zip(due, results):
                self._record(session, d, *result, at=now)
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
                   SIGNATURE_HEADER: sign(hook.secret, int(time.time()), body),
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
        _wakeups.add(self._wakeup)
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
            _wakeups.discard(self._wakeup)

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()


# ------------------------------------------------------------------ parked notices
async def _unpark_webhooks(session: AsyncSession, provider_id: str | None = None) -> int:
    q = update(WebhookDelivery).where(WebhookDelivery.status == PARKED)
    if provider_id is not None:
        q = q.where(WebhookDelivery.provider_id == provider_id)
    result = await session.execute(q.values(status=PENDING, next_attempt_at=datetime.now(timezone.utc)))
    return result.rowcount or 0


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
    posted = await _unpark_webhooks(session, provider_id)
    if posted:
        _wake_on_commit(session)
    if queued or posted:
        log.debug("notices.parked_retried", queue=queued, webhook=posted, provider_id=provider_id)
    return {"queue": queued, "webhook": posted}


def _wake_on_commit(session: AsyncSession) -> None:
    sa_event.listen(session.sync_session, "after_commit", lambda _s: _wake(), once=True)


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
