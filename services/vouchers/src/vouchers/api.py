"""Vouchers HTTP API: each route parses, authorises and calls a use case (``usecases.py``)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from seteli_shared.addresses import client_address
from seteli_shared.auth import (FUNDER_STAFF, PROVIDER_ROLES, Principal, Role, TenantScope, acting_for_funder, mint,
                                require, tenant_scope)
from seteli_shared.catalogue import CATEGORIES
from seteli_shared.clock import ClockDep
from seteli_shared.errors import DomainError
from seteli_shared.schemas import PageDep
from seteli_shared.service import SessionsDep
from seteli_shared.web import created_or_repeated, error_responses

from . import domain, usecases
from .schemas import (ClientLogin, ClientLoginCode, ClientToken, IssuedVoucher, ProviderChoice, VoucherCreate,
                      VoucherPage, VoucherView, issued, shown_code, view_of)

router = APIRouter(tags=["vouchers"])
READERS = (Role.OPERATOR, *FUNDER_STAFF, Role.FUNDER_CASE_SYSTEM, *PROVIDER_ROLES, Role.CLIENT)
ISSUERS = (Role.FUNDER_DECISION_MAKER, Role.FUNDER_CASE_SYSTEM)


@router.post("/vouchers", status_code=201, response_model=IssuedVoucher,
             responses=created_or_repeated(IssuedVoucher, 409))
async def issue_voucher(
    body: VoucherCreate, sessions: SessionsDep, response: Response, clock: ClockDep,
    principal: Annotated[Principal, require(*ISSUERS, scope="body")],
) -> IssuedVoucher:
    """Issue a voucher on a service decision of a registered funder. The answer carries the client's
    login code (`client_login_code`) for the decision letter, shown this once. The same decision sent
    again answers 200 with the same voucher and no login code."""
    body = body.model_copy(update={"funder_id": acting_for_funder(principal, body.funder_id)})
    voucher, login_code = await usecases.issue_voucher(sessions, principal, body, clock)
    if login_code is None:
        response.status_code = 200
    return issued(voucher, login_code)


@router.get("/vouchers", response_model=VoucherPage)
async def list_vouchers(
    sessions: SessionsDep, page: PageDep,
    scope: Annotated[TenantScope, tenant_scope(*READERS)],
    status: Annotated[str | None, Query(max_length=20, pattern=r"^[a-z_]+$")] = None,
    category: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z_]+$")] = None,
    client_ref: Annotated[str | None, Query(max_length=64, description="funder and operator staff only")] = None,
    decision_ref: Annotated[str | None, Query(max_length=64, description="funder and operator staff only")] = None,
) -> VoucherPage:
    """Vouchers of the caller's tenant, oldest first, each in the caller's view: operator staff all,
    funder staff and case system their funder's, provider staff those chosen for their provider,
    the client its own."""
    if category is not None and category not in CATEGORIES:
        raise DomainError("unknown_category", "unknown service category")
    where = usecases.VoucherFilter(status=status, category=category, client_ref=client_ref, decision_ref=decision_ref)
    rows, cursor = await usecases.list_vouchers(sessions, scope, where, page)
    audience = domain.audience_of(scope.principal)
    return VoucherPage(items=[view_of(v, audience) for v in rows], next_cursor=cursor)


@router.get("/vouchers/{voucher_id}", response_model=VoucherView)
async def get_voucher(
    voucher_id: str, sessions: SessionsDep, clock: ClockDep, principal: Annotated[Principal, require(*READERS)],
):
    """A voucher, for its funder, its client, the provider chosen for it and operator staff, each in
    its own view (`view`): the provider sees what it needs to charge, never the client's or decision's
    references; no one sees the client's login code."""
    voucher = await usecases.get_voucher(sessions, principal, voucher_id)
    view = view_of(voucher, domain.audience_of(principal))
    if hasattr(view, "usage"):  # the client and the funder see the current period's units used and left
        from .lifecycle import usage_of

        view.usage = await usage_of(sessions, voucher, clock)
    return view


@router.post("/vouchers/{voucher_id}/provider", response_model=VoucherView)
async def choose_provider(
    voucher_id: str, body: ProviderChoice, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.CLIENT, Role.FUNDER_DECISION_MAKER)],
):
    """The client (or the funder's decision maker for the client) chooses or switches to a provider
    approved by the voucher's funder for its category. A provider whose approval is suspended or revoked
    on the day of the choice is refused (422 `provider_suspended`, `provider_revoked`); a voucher whose
    chosen provider was suspended later keeps it and can still be read."""
    voucher = await usecases.choose_provider(sessions, principal, voucher_id, body.provider_id, clock)
    return view_of(voucher, domain.audience_of(principal))


@router.post("/vouchers/{voucher_id}/client-login-code", response_model=ClientLoginCode, tags=["clients"])
async def issue_client_login_code(
    voucher_id: str, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*ISSUERS)],
) -> ClientLoginCode:
    """A new login code for the voucher's client (for a new decision letter), shown this once; the
    previous code stops working. Only the voucher's funder's decision maker or case system."""
    voucher, code = await usecases.issue_client_login_code(sessions, principal, voucher_id, clock)
    return ClientLoginCode(voucher_id=voucher.id, voucher_code=shown_code(voucher.voucher_code),
                           client_login_code=shown_code(code),
                           issued_at=voucher.client_login_issued_at)


def _throttle_secret(settings) -> bytes:  # noqa: ANN001
    """Keys the throttle's hashes of addresses and voucher codes: it needs to tell them apart, not to
    know them."""
    return (settings.token_signing_key or settings.dev_signing_secret or settings.jwt_audience).encode()


@router.post("/client-sessions", response_model=ClientToken, tags=["clients"],
             responses=error_responses(401, 429))
async def client_login(body: ClientLogin, request: Request, sessions: SessionsDep, clock: ClockDep) -> ClientToken:
    """The clients' light login: the voucher code and the client login code (from the decision
    letter) give a token bound to that one voucher. Public; a wrong pair says only that it is wrong.
    Wrong codes are slowed per address: after a few for one voucher code (or many for any) from one
    address, its next attempt waits, the wait doubling with each further failure (429 with
    `Retry-After`, whether the pair is right or not). Failures from other addresses never keep the
    right code out. The address is the caller's, or from `X-Forwarded-For` when the caller is one of
    the `TRUSTED_PROXIES` (the portal)."""
    settings = request.app.state.settings
    voucher = await usecases.client_login(sessions, body.voucher_code, body.client_login_code,
                                          client_address(request, settings.proxies), clock,
                                          usecases.login_throttle(settings), _throttle_secret(settings))
    if settings.is_development:
        key, alg, kid = settings.dev_signing_secret, "HS256", None
    elif settings.token_signing_key:
        key, alg, kid = settings.token_signing_key, "RS256", settings.token_signing_kid or None
    else:
        raise DomainError("client_login_unavailable", "no token signing key is configured", status_code=503)
    ttl = settings.client_token_ttl_seconds
    # the token's times are the real clock's: the services verifying it compare them with theirs
    token = mint(f"client:{voucher.id}", [Role.CLIENT.value], key=key, algorithm=alg, kid=kid,
                 issuer=settings.jwt_issuer, audience=settings.jwt_audience, ttl=ttl, voucher_id=voucher.id)
    return ClientToken(access_token=token, expires_in=ttl, voucher_id=voucher.id)
