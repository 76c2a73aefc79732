"""Who may call an endpoint, and which tenant's data it sees.

Each endpoint declares who may call it with ``require(...)``, a FastAPI dependency whose policy the
route matrix test reads; it authenticates the caller and checks the role. Lists take the caller's
``TenantScope`` (``tenant_scope(...)``) and let it restrict their query; reads of one resource ask
``ensure_visible``: another tenant's resource answers 404, never revealing that it exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import DomainError, NotFound
from .principal import InvalidToken, Principal
from .roles import Role
from .tokens import TokenVerifier

_bearer = HTTPBearer(auto_error=False, description="OAuth2 bearer JWT")


class Unauthenticated(DomainError):
    status_code = 401

    def __init__(self, message: str):
        super().__init__("unauthenticated", message)
        self.headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class Forbidden(DomainError):
    status_code = 403


def verifier_of(app: Any) -> TokenVerifier:
    """The app's token verifier (made on first use, from its settings), with its cache of verified tokens."""
    state = app.state
    if getattr(state, "token_verifier", None) is None:
        state.token_verifier = TokenVerifier(state.settings)
    return state.token_verifier


def _verifier(request: Request) -> TokenVerifier:
    return verifier_of(request.app)


@dataclass(frozen=True)
class Policy:
    """Who may call an endpoint (read by the route matrix test)."""

    roles: frozenset[Role]
    #: how the tenant is told: "path" (another tenant's resource -> 404), "body" (acting for another
    #: tenant -> 403), "list" (each caller sees its own tenant's part), "register" (funder staff see
    #: every provider, provider staff their own), "none" (the roles alone decide)
    scope: str = "path"


class Require:
    """The dependency that authenticates the caller and checks its role against the policy."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def authenticate(self, request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        if credentials is None:
            raise Unauthenticated("a bearer token is required")
        try:
            principal = _verifier(request).verify(credentials.credentials)
        except InvalidToken as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        if not principal.roles & self.policy.roles:
            raise Forbidden("forbidden", "your role may not do this", allowed_roles=sorted(self.policy.roles))
        return principal

    async def __call__(self, request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        # async: verification is CPU-only (and cached), so it runs on the loop, not via the thread pool
        return self.authenticate(request, credentials)


def require(*roles: Role, scope: str = "path") -> Any:
    """``Annotated[Principal, require(...)]`` for an endpoint the given roles may call."""
    return Depends(Require(Policy(frozenset(roles), scope)))


@dataclass(frozen=True)
class TenantScope:
    """The part of a list the caller may see."""

    principal: Principal

    def restrict(self, query: sa.Select, *, funder: Any = None, provider: Any = None, voucher: Any = None,
                 all_funders: bool = False) -> sa.Select:
        """``query`` limited to the caller's tenant, given the columns that name each kind of tenant
        in this list. Operator staff see everything; a caller whose kind of tenant the list does not
        name sees nothing."""
        p = self.principal
        if p.is_operator:
            return query
        if p.funder_id:
            if all_funders:
                return query
            return query.where(funder == p.funder_id) if funder is not None else query.where(sa.false())
        if p.provider_id:
            return query.where(provider == p.provider_id) if provider is not None else query.where(sa.false())
        if p.voucher_id:
            return query.where(voucher == p.voucher_id) if voucher is not None else query.where(sa.false())
        return query.where(sa.false())


class RequireScope(Require):
    async def __call__(self, request: Request,  # type: ignore[override]
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> TenantScope:
        return TenantScope(self.authenticate(request, credentials))


def tenant_scope(*roles: Role) -> Any:
    """``Annotated[TenantScope, tenant_scope(...)]`` for a list the given roles may read, each its part."""
    return Depends(RequireScope(Policy(frozenset(roles), "list")))


def ensure_visible(principal: Principal, what: str, *, funder_id: str | None = None,
                   provider_id: str | None = None, voucher_id: str | None = None,
                   all_funders: bool = False) -> None:
    """Raise 404 unless the resource belongs to the caller's tenant."""
    if principal.is_operator:
        return
    if principal.funder_id and (all_funders or principal.funder_id == funder_id):
        return
    if principal.provider_id and provider_id is not None and principal.provider_id == provider_id:
        return
    if principal.voucher_id and voucher_id is not None and principal.voucher_id == voucher_id:
        return
    raise NotFound(what)


def acting_for_funder(principal: Principal, funder_id: str | None) -> str:
    """The funder an action is taken for: the caller's own; operator staff must name one."""
    if principal.is_operator:
        if not funder_id:
            raise DomainError("funder_id_required", "operator staff must name the funder")
        return funder_id
    if funder_id and funder_id != principal.funder_id:
        raise Forbidden("forbidden_tenant", "you may act only for your own funder")
    return principal.funder_id


def acting_for_provider(principal: Principal, provider_id: str | None) -> str:
    if principal.is_operator:
        if not provider_id:
            raise DomainError("provider_id_required", "operator staff must name the provider")
        return provider_id
    if provider_id and provider_id != principal.provider_id:
        raise Forbidden("forbidden_tenant", "you may act only for your own provider")
    return principal.provider_id
