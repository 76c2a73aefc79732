"""Notices nobody could receive, for the operator: the parked ones (a provider's system has not bound its
queue yet, or its webhook keeps failing) and trying them again. Parse, authorise, call ``notices``."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from seteli_shared import audit
from seteli_shared.auth import Principal, Role, require
from seteli_shared.db import unit_of_work
from seteli_shared.schemas import Page, PageDep
from seteli_shared.service import SessionsDep

from . import notices

router = APIRouter(tags=["notices"])
ProviderFilter = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9-]{1,64}$", description="one provider's only")]


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


@router.get("/notices/parked", response_model=Page[ParkedNoticePublic])
async def parked_notices(
    sessions: SessionsDep, page: PageDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
    provider_id: ProviderFilter = None,
) -> Page[ParkedNoticePublic]:
    """Settlement notices and recovery claims parked, oldest first: no queue was bound for the provider
    after `OUTBOX_PARK_AFTER_ATTEMPTS` attempts, or its webhook failed `WEBHOOK_MAX_ATTEMPTS` times. They are
    tried again every `NOTICE_PARKED_RETRY_SECONDS` (an hour) and by `POST /notices/parked/retry`."""
    async with sessions() as session:
        found, cursor = await notices.parked_page(session, page, provider_id)
    return Page(items=[ParkedNoticePublic(**vars(p)) for p in found], next_cursor=cursor)


@router.post("/notices/parked/retry", response_model=Retried)
async def retry_parked_notices(
    sessions: SessionsDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
    provider_id: ProviderFilter = None,
) -> Retried:
    """Try the parked notices (all, or one provider's) again now: after `seteli-broker add-provider-system`
    has bound the provider's queue, or its receiver is back. One still undeliverable is parked again."""
    async with unit_of_work(sessions) as session:
        retried = await notices.retry_parked_in(session, provider_id)
        await audit.record(session, principal, "notices.retry_parked", "provider", provider_id, None)
    return Retried(**retried)
