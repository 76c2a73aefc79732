"""The notices room over HTTP: providers' webhooks for settlement notices and their delivery log, and the
notices nobody could receive (parked) with trying them again. Parse, authorise, call a use case
(``webhooks``, ``parked``)."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field, HttpUrl
from sqlalchemy import select

from seteli_shared import audit
from seteli_shared.auth import Principal, Role, ensure_visible, require
from seteli_shared.clock import ClockDep
from seteli_shared.db import unit_of_work
from seteli_shared.errors import DomainError
from seteli_shared.schemas import Page, PageDep, RequestModel, paginate
from seteli_shared.service import SessionsDep
from seteli_shared.web import error_responses

from ..models import WebhookAttempt, WebhookDelivery
from . import egress, parked, webhooks
from .notices import SIGNATURE_HEADER

router = APIRouter()
WEBHOOK_ROLES = (Role.OPERATOR, Role.PROVIDER_MANAGER)
ProviderFilter = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9-]{1,64}$", description="one provider's only")]


# ------------------------------------------------------------------ webhooks
class WebhookSet(RequestModel):
    url: HttpUrl = Field(description="where settlement notices are POSTed: https, at a host that resolves to public "
                         "internet addresses only")


class WebhookSecret(BaseModel):
    provider_id: str
    url: str
    secret: str = Field(description="the HMAC-SHA256 key of `X-Seteli-Signature`; shown only now")
    signature_header: str = SIGNATURE_HEADER
    updated_at: datetime


@router.put("/providers/{provider_id}/webhook", response_model=WebhookSecret, tags=["notices"],
            responses=error_responses(404, 422))
async def set_webhook(
    provider_id: str, body: WebhookSet, sessions: SessionsDep, clock: ClockDep, request: Request,
    principal: Annotated[Principal, require(*WEBHOOK_ROLES)],
) -> WebhookSecret:
    """Set the provider's webhook for settlement notices (for providers without an AMQP consumer). Each
    call makes a new secret, shown once, which replaces the old one at once (to change over without refusing
    a notice: `POST .../webhook/secret`, both signing for a grace). Notices are POSTed with `X-Seteli-Signature: t=<unix time>,v1=<hex>`,
    the HMAC-SHA256 of `"<t>." + body`; a non-2xx answer (a redirect too: none is followed) is retried with
    back-off. The URL must be https (422 `webhook_not_https`) at a host whose every address is on the public
    internet (422 `webhook_address_not_public`: loopback, private, shared, link-local, multicast, reserved, or
    an IPv6 address carrying such an IPv4 one; `webhook_address_unresolvable`); it is checked again at each
    delivery, which connects to the address it checked."""
    ensure_visible(principal, "provider", provider_id=provider_id)
    if len(str(body.url)) > 2000:
        raise DomainError("url_too_long", "the URL is longer than 2000 characters")
    await egress.check(str(body.url), egress.Policy.of(request.app.state.settings),
                       getattr(request.app.state, "webhook_resolver", None))
    async with unit_of_work(sessions) as session:
        hook = await webhooks.set_webhook(session, provider_id, str(body.url), clock.now())
        await audit.record(session, principal, "webhook.set", "provider", provider_id, None)
    return WebhookSecret(provider_id=provider_id, url=hook.url, secret=hook.secret, updated_at=hook.updated_at)


class WebhookRotated(BaseModel):
    provider_id: str
    secret: str = Field(description="the new HMAC-SHA256 key of `X-Seteli-Signature`; shown only now")
    previous_secret_valid_until: datetime | None = Field(description=(
        "until then every delivery is signed with both secrets (`t=...,v1=<new>,v1=<previous>`); after it with the "
        "new one only (null: a grace of 0 hours, the previous secret no longer signs)"))
    signature_header: str = SIGNATURE_HEADER


@router.post("/providers/{provider_id}/webhook/secret", response_model=WebhookRotated, tags=["notices"],
             responses=error_responses(404))
async def rotate_webhook_secret(
    provider_id: str, sessions: SessionsDep, clock: ClockDep, request: Request,
    principal: Annotated[Principal, require(*WEBHOOK_ROLES)],
) -> WebhookRotated:
    """Rotate the webhook's secret without losing a delivery: a new secret, shown once; the previous one keeps
    signing beside it for `WEBHOOK_SECRET_GRACE_HOURS` (24), so `X-Seteli-Signature` carries a `v1` for each
    (`t=<t>,v1=<new>,v1=<previous>`) and a receiver holding either accepts. Then only the new one signs.
    Rotating again within the grace drops the oldest secret at once. (`PUT .../webhook` replaces the secret
    at once, for a secret that has leaked.) 404 when the provider has no webhook."""
    ensure_visible(principal, "provider", provider_id=provider_id)
    grace = timedelta(hours=request.app.state.settings.webhook_secret_grace_hours)
    async with unit_of_work(sessions) as session:
        hook = await webhooks.rotate_secret(session, provider_id, clock.now(), grace)
        await audit.record(session, principal, "webhook.rotate_secret", "provider", provider_id, None)
    return WebhookRotated(provider_id=provider_id, secret=hook.secret,
                          previous_secret_valid_until=hook.previous_secret_until)


class AttemptPublic(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryPublic(BaseModel):
    id: str
    message_id: str
    notice_type: str
    url: str
    status: str = Field(description="pending, delivered, parked (failed `WEBHOOK_MAX_ATTEMPTS` times: tried again "
                        "hourly, when the webhook is set anew and by the operator) or failed (the webhook is gone)")
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    created_at: datetime
    delivered_at: datetime | None
    log: list[AttemptPublic]


@router.get("/providers/{provider_id}/webhook/deliveries", response_model=Page[DeliveryPublic], tags=["notices"],
            responses=error_responses(404))
async def webhook_deliveries(
    provider_id: str, sessions: SessionsDep, page: PageDep,
    principal: Annotated[Principal, require(*WEBHOOK_ROLES)],
) -> Page[DeliveryPublic]:
    """The provider's webhook deliveries, oldest first, each with the log of its attempts."""
    ensure_visible(principal, "provider", provider_id=provider_id)
    async with sessions() as session:
        rows, cursor = await paginate(session, select(WebhookDelivery).where(
            WebhookDelivery.provider_id == provider_id), [WebhookDelivery.created_at, WebhookDelivery.id], page)
        attempts = (await session.execute(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(
            [d.id for d in rows])).order_by(WebhookAttempt.id))).scalars().all() if rows else []
    by_delivery: dict[str, list[AttemptPublic]] = {}
    for a in attempts:
        by_delivery.setdefault(a.delivery_id, []).append(AttemptPublic(**a.model_dump(exclude={"id", "delivery_id"})))
    return Page(items=[DeliveryPublic(**d.model_dump(exclude={"body", "provider_id", "last_error"}),
                                      log=by_delivery.get(d.id, [])) for d in rows], next_cursor=cursor)


class ParkedNoticePublic(BaseModel):
    channel: Literal["queue", "webhook"] = Field(description="the provider's queue, or its webhook")
    id: str = Field(description="the message id (queue) or the webhook delivery's id")
    message_id: str
    provider_id: str
    notice_type: str
    subject: str = Field(description="the settlement's or the recovery claim's id")
    attempts: int
    reason: str = Field(description="`no_queue_bound` (the broker had no queue for it), or the webhook's last "
                        "error (`http_500`, `timeout`, `webhook_address_not_public`...)")
    created_at: datetime


class Retried(BaseModel):
    queue: int = Field(description="parked queue notices made due: the relay publishes them now")
    webhook: int = Field(description="parked webhook deliveries made due: the worker posts them now")


@router.get("/notices/parked", response_model=Page[ParkedNoticePublic], tags=["notices"])
async def parked_notices(
    sessions: SessionsDep, page: PageDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
    provider_id: ProviderFilter = None,
) -> Page[ParkedNoticePublic]:
    """Settlement notices and recovery claims parked, oldest first: no queue was bound for the provider
    after `OUTBOX_PARK_AFTER_ATTEMPTS` attempts, or its webhook failed `WEBHOOK_MAX_ATTEMPTS` times. They are
    tried again every `NOTICE_PARKED_RETRY_SECONDS` (an hour) and by `POST /notices/parked/retry`."""
    async with sessions() as session:
        found, cursor = await parked.parked_page(session, page, provider_id)
    return Page(items=[ParkedNoticePublic(**vars(p)) for p in found], next_cursor=cursor)


NoticeId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="a queue notice's message id or "
                                "a webhook delivery's id")]


async def _parked_or_404(session, notice_id: str) -> parked.Parked:  # noqa: ANN001
    found = await parked.one_parked(session, notice_id)
    if found is None:
        raise DomainError("parked_notice_not_found", f"no parked notice {notice_id}", status_code=404)
    return found


@router.get("/notices/parked/{notice_id}", response_model=ParkedNoticePublic, tags=["notices"],
            responses=error_responses(404))
async def parked_notice(notice_id: NoticeId, sessions: SessionsDep,
                        principal: Annotated[Principal, require(Role.OPERATOR, scope="none")]) -> ParkedNoticePublic:
    """One parked notice: its provider, type, subject, attempts and why it is parked; never its body."""
    async with sessions() as session:
        return ParkedNoticePublic(**vars(await _parked_or_404(session, notice_id)))


class ActedOnNotice(BaseModel):
    action: Literal["retried", "discarded"]
    notice: ParkedNoticePublic


@router.post("/notices/parked/{notice_id}/retry", response_model=ActedOnNotice, tags=["notices"],
             responses=error_responses(404))
async def retry_parked_notice(notice_id: NoticeId, sessions: SessionsDep,
                              principal: Annotated[Principal, require(Role.OPERATOR, scope="none")]) -> ActedOnNotice:
    """Try one parked notice again now (the relay or the webhook worker takes it at once; one still
    undeliverable is parked again). Recorded in the audit trail."""
    async with unit_of_work(sessions) as session:
        notice = await _parked_or_404(session, notice_id)
        await parked.retry_one(session, notice)
        await audit.record(session, principal, "notices.retry_parked_one", "notice", notice.id, None)
    return ActedOnNotice(action="retried", notice=ParkedNoticePublic(**vars(notice)))


@router.post("/notices/parked/{notice_id}/discard", response_model=ActedOnNotice, tags=["notices"],
             responses=error_responses(404))
async def discard_parked_notice(notice_id: NoticeId, sessions: SessionsDep,
                                principal: Annotated[Principal, require(Role.OPERATOR, scope="none")]
                                ) -> ActedOnNotice:
    """Give one parked notice up for good: a queue notice is never sent, a webhook delivery becomes `failed`
    (the provider reads its statement in the portal or the API instead). Recorded in the audit trail."""
    async with unit_of_work(sessions) as session:
        notice = await _parked_or_404(session, notice_id)
        await parked.discard_one(session, notice)
        await audit.record(session, principal, "notices.discard_parked", "notice", notice.id, None)
    return ActedOnNotice(action="discarded", notice=ParkedNoticePublic(**vars(notice)))


@router.post("/notices/parked/retry", response_model=Retried, tags=["notices"])
async def retry_parked_notices(
    sessions: SessionsDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
    provider_id: ProviderFilter = None,
) -> Retried:
    """Try the parked notices (all, or one provider's) again now: after `seteli-broker add-provider-system`
    has bound the provider's queue, or its receiver is back. One still undeliverable is parked again."""
    async with unit_of_work(sessions) as session:
        retried = await parked.retry_parked_in(session, provider_id)
        await audit.record(session, principal, "notices.retry_parked", "provider", provider_id, None)
    return Retried(**retried)
