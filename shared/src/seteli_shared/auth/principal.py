"""Who is calling: the principal, built from token claims that must match their contract."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from ..privacy import find_in
from .roles import FUNDER_ROLES, PROVIDER_ROLES, Role


class InvalidToken(Exception):
    """The token cannot be trusted or does not match the claims contract (always a 401)."""


_Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]


class Claims(BaseModel):
    """The claims contract. Anything else in the token is ignored; these must have these shapes."""

    model_config = ConfigDict(extra="ignore", strict=True)

    sub: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    roles: list[str]
    funder_id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")] | None = None
    provider_id: _Id | None = None
    voucher_id: _Id | None = None


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
            c = Claims.model_validate(claims)
        except ValidationError as exc:
            fields = sorted({str(e["loc"][0]) for e in exc.errors() if e.get("loc")})
            raise InvalidToken(f"the token's claims do not match the contract ({', '.join(fields)})") from None
        if find_in([c.sub, c.funder_id, c.provider_id, c.voucher_id]):
            # a subject that is a personal identity code would land in the audit trail
            raise InvalidToken("the token's claims carry personal data")
        try:
            roles = frozenset(Role(r) for r in c.roles)
        except ValueError:
            raise InvalidToken("the token names an unknown role") from None
        p = cls(subject=c.sub, roles=roles, funder_id=c.funder_id, provider_id=c.provider_id,
                voucher_id=c.voucher_id)
        # a role is only meaningful bound to its tenant
        if p.roles & FUNDER_ROLES and not p.funder_id:
            raise InvalidToken("funder roles need a funder_id claim")
        if p.roles & PROVIDER_ROLES and not p.provider_id:
            raise InvalidToken("provider roles need a provider_id claim")
        if Role.CLIENT in p.roles and not p.voucher_id:
            raise InvalidToken("the client role needs a voucher_id claim")
        return p
