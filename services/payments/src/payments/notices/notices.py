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
import time
from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared import ids
from seteli_shared.events import Envelope
from seteli_shared.ids import new_id
from seteli_shared.logging import correlation_id_var
from seteli_shared.outbox import add_message

from ..models import Webhook, WebhookDelivery

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
        wake()
    return env



def new_secret() -> str:
    """A webhook's signing secret (``ids``: never read as a personal identity code where it is stored)."""
    return ids.new_secret(32, prefix="whsec_")


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str | list[str], timestamp: int, body: bytes) -> str:
    """The ``X-Seteli-Signature`` value: ``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>``, one ``v1``
    per secret given (the new one first, then the previous one while a rotation's grace lasts)."""
    secrets = [secret] if isinstance(secret, str) else secret
    return ",".join([f"t={timestamp}", *(f"v1={_mac(s, timestamp, body)}" for s in secrets)])


def verify(secret: str, header: str, body: bytes, tolerance_seconds: int = 300, now: float | None = None) -> bool:
    """What a provider's receiver does: one ``v1`` of the header matches its secret, and the time is recent."""
    t, signatures = None, []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if not (value.isascii() and value.isdigit()):
                return False
            t = int(value)
        elif key == "v1":
            signatures.append(value)
    if t is None or abs((now if now is not None else time.time()) - t) > tolerance_seconds:
        return False
    expected = _mac(secret, t, body)
    return any(hmac.compare_digest(expected, s) for s in signatures)


#: the webhook workers of this process (``webhooks.WebhookWorker``), woken when a delivery is recorded
wakeups: set[asyncio.Event] = set()


def wake() -> None:
    for ev in list(wakeups):
        ev.set()


def wake_on_commit(session: AsyncSession) -> None:
    sa_event.listen(session.sync_session, "after_commit", lambda _s: wake(), once=True)

