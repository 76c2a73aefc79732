"""Identity and authorisation, the same in every service.

Callers present OAuth2 bearer JWTs, verified locally: signature, issuer, audience, expiry.
Production keys come from a JWKS (asymmetric: RS256/ES256); the development HS256 secret is
accepted only when ENVIRONMENT is development or test. Claims carry the roles and the funder,
provider or voucher the caller belongs to.

Each endpoint declares who may call it with ``require(...)``, a FastAPI dependency whose policy the
route matrix test reads. Within the allowed roles, ``ensure_visible`` decides whether a resource
belongs to the caller's tenant; another tenant's resource answers 404, never revealing it exists.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import DomainError, NotFound
from .settings import DEV_SIGNING_SECRET, ServiceSettings

ASYMMETRIC = ["RS256", "ES256", "PS256", "EdDSA"]


class Role(StrEnum):
    OPERATOR = "operator"  # operator staff: runs the platform
    FUNDER_DECISION_MAKER = "funder_decision_maker"  # issues and amends vouchers
    FUNDER_PROVIDER_APPROVER = "funder_provider_approver"  # approves providers into the register
    FUNDER_FINANCE = "funder_finance"  # settlements, invoices
    FUNDER_REPORTING = "funder_reporting"  # reporting viewer
    FUNDER_CASE_SYSTEM = "funder_case_system"  # machine: the funder's case management system
    PROVIDER_MANAGER = "provider_manager"  # register data, prices
    PROVIDER_CHARGER = "provider_charger"  # charges and settlements (accountant)
    PROVIDER_BILLING_SYSTEM = "provider_billing_system"  # machine: the provider's billing system
    CLIENT = "client"  # bound to one voucher


FUNDER_ROLES = frozenset({Role.FUNDER_DECISION_MAKER, Role.FUNDER_PROVIDER_APPROVER, Role.FUNDER_FINANCE,
                          Role.FUNDER_REPORTING, Role.FUNDER_CASE_SYSTEM})
PROVIDER_ROLES = frozenset({Role.PROVIDER_MANAGER, Role.PROVIDER_CHARGER, Role.PROVIDER_BILLING_SYSTEM})
FUNDER_STAFF = FUNDER_ROLES - {Role.FUNDER_CASE_SYSTEM}
PROVIDER_STAFF = PROVIDER_ROLES - {Role.PROVIDER_BILLING_SYSTEM}


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[Role]
    funder_id: str | None = None
    provider_id: str | None = None
    voucher_id: str | None = None

    @property
    def is_operator(self) -> bool:
        return Role.OPERATOR in self.roles

    @property
    def tenant(self) -> str:
        if self.is_operator:
            return "operator"
        if self.funder_id:
            return f"funder:{self.funder_id}"
        if self.provider_id:
            return f"provider:{self.provider_id}"
        return f"voucher:{self.voucher_id}"

    def has(self, *roles: Role) -> bool:
        return bool(self.roles & set(roles))

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> "Principal":
        try:
            roles = frozenset(Role(r) for r in claims.get("roles", []))
        except ValueError as exc:
            raise InvalidToken(f"unknown role: {exc}") from exc
        p = cls(subject=str(claims["sub"]), roles=roles, funder_id=claims.get("funder_id"),
                provider_id=claims.get("provider_id"), voucher_id=claims.get("voucher_id"))
        # a role is only meaningful bound to its tenant
        if p.roles & FUNDER_ROLES and not p.funder_id:
            raise InvalidToken("funder roles need a funder_id claim")
        if p.roles & PROVIDER_ROLES and not p.provider_id:
            raise InvalidToken("provider roles need a provider_id claim")
        if Role.CLIENT in p.roles and not p.voucher_id:
            raise InvalidToken("the client role needs a voucher_id claim")
        return p


class InvalidToken(Exception):
    pass


# ------------------------------------------------------------------ verification
class TokenVerifier:
    def __init__(self, settings: ServiceSettings):
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.dev_secret = settings.dev_signing_secret if settings.is_development else ""
        self.jwks: jwt.PyJWKSet | None = None
        self.jwks_client: jwt.PyJWKClient | None = None
        source = settings.jwks_url
        if source.startswith(("http://", "https://")):
            self.jwks_client = jwt.PyJWKClient(source, cache_keys=True, lifespan=300)
        elif source:
            self.jwks = jwt.PyJWKSet.from_json(Path(source.removeprefix("file://")).read_text())

    def _key_for(self, token: str, header: dict) -> tuple[Any, list[str]]:
        alg = header.get("alg")
        if alg == "HS256":
            if not self.dev_secret:
                raise InvalidToken("symmetric tokens are accepted only in development")
            return self.dev_secret, ["HS256"]
        if alg not in ASYMMETRIC:
            raise InvalidToken(f"algorithm {alg!r} is not accepted")
        if self.jwks_client is not None:
            return self.jwks_client.get_signing_key_from_jwt(token).key, [alg]
        if self.jwks is not None:
            kid = header.get("kid")
            keys = [k for k in self.jwks.keys if kid is None or k.key_id == kid]
            if not keys:
                raise InvalidToken("no key with this kid")
            return keys[0].key, [alg]
        raise InvalidToken("no JWKS configured")

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            key, algorithms = self._key_for(token, header)
            claims = jwt.decode(token, key, algorithms=algorithms, audience=self.audience, issuer=self.issuer,
                                options={"require": ["exp", "iat", "sub", "iss", "aud"]}, leeway=30)
        except InvalidToken:
            raise
        except (jwt.PyJWTError, ValueError, KeyError) as exc:
            raise InvalidToken(str(exc)) from exc
        return Principal.from_claims(claims)


# ------------------------------------------------------------------ FastAPI dependencies
_bearer = HTTPBearer(auto_error=False, description="OAuth2 bearer JWT")


def _unauthenticated(message: str) -> HTTPException:
    return HTTPException(401, {"reason": "unauthenticated", "message": message},
                         headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _verifier(request: Request) -> TokenVerifier:
    state = request.app.state
    if getattr(state, "token_verifier", None) is None:
        state.token_verifier = TokenVerifier(state.settings)
    return state.token_verifier


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

    def __call__(self, request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        if credentials is None:
            raise _unauthenticated("a bearer token is required")
        try:
            principal = _verifier(request).verify(credentials.credentials)
        except InvalidToken as exc:
            raise _unauthenticated(f"invalid token: {exc}") from exc
        if not principal.roles & self.policy.roles:
            raise HTTPException(403, {"reason": "forbidden", "message": "your role may not do this",
                                      "details": {"allowed_roles": sorted(self.policy.roles)}})
        request.state.principal = principal
        return principal


def require(*roles: Role, scope: str = "path") -> Any:
    """``Annotated[Principal, require(...)]`` for an endpoint the given roles may call."""
    return Depends(Require(Policy(frozenset(roles), scope)))


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
        raise HTTPException(403, {"reason": "forbidden_tenant", "message": "you may act only for your own funder"})
    return principal.funder_id


def acting_for_provider(principal: Principal, provider_id: str | None) -> str:
    if principal.is_operator:
        if not provider_id:
            raise DomainError("provider_id_required", "operator staff must name the provider")
        return provider_id
    if provider_id and provider_id != principal.provider_id:
        raise HTTPException(403, {"reason": "forbidden_tenant", "message": "you may act only for your own provider"})
    return principal.provider_id


# ------------------------------------------------------------------ issuing tokens
def mint(subject: str, roles: list[str], *, secret: str = DEV_SIGNING_SECRET, issuer: str = "seteli-dev",
         audience: str = "seteli", ttl: int = 3600, key: Any = None, kid: str | None = None,
         algorithm: str = "HS256", now: int | None = None, **claims: Any) -> str:
    """A signed token; HS256 with the development secret unless a private ``key`` is given."""
    iat = int(now if now is not None else time.time())
    payload = {"sub": subject, "roles": roles, "iss": issuer, "aud": audience, "iat": iat, "exp": iat + ttl,
               "jti": uuid.uuid4().hex, **{k: v for k, v in claims.items() if v is not None}}
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key if key is not None else secret, algorithm=algorithm, headers=headers)

