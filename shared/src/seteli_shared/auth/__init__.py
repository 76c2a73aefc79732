"""Identity and authorisation, the same in every service: roles (``roles``), the principal and its
claims contract (``principal``), token verification and minting (``tokens``), and what each
endpoint allows and shows (``access``). The development-token CLI is ``seteli_shared.token_cli``."""
from .access import (Forbidden, Policy, Require, RequireScope, TenantScope, Unauthenticated, acting_for_funder,
                     acting_for_provider, ensure_visible, require, tenant_scope, verifier_of)
from .principal import Claims, InvalidToken, Principal
from .roles import FUNDER_ROLES, FUNDER_STAFF, PROVIDER_ROLES, PROVIDER_STAFF, Role
from .tokens import ASYMMETRIC, TokenVerifier, mint

__all__ = [
    "ASYMMETRIC", "Claims", "FUNDER_ROLES", "FUNDER_STAFF", "Forbidden", "InvalidToken", "PROVIDER_ROLES",
    "PROVIDER_STAFF", "Policy", "Principal", "Require", "RequireScope", "Role", "TenantScope", "TokenVerifier",
    "Unauthenticated", "acting_for_funder", "acting_for_provider", "ensure_visible", "mint", "require",
    "tenant_scope", "verifier_of",
]
