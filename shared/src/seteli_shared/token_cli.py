"""``seteli-token``: mint a development bearer token for a role.

A token the services would refuse anyway (a funder role with no funder, a provider role with no
provider, a client with no voucher) is not minted: the command says what is missing and exits 2.
"""
from __future__ import annotations

import argparse
import json
import sys

import jwt

from .auth import FUNDER_ROLES, PROVIDER_ROLES, Role, mint
from .settings import ServiceSettings

# role -> (the argument it needs, the claim it fills)
_BINDINGS: dict[str, tuple[str, str]] = {
    **{r.value: ("--funder", "funder_id") for r in FUNDER_ROLES},
    **{r.value: ("--provider", "provider_id") for r in PROVIDER_ROLES},
    Role.CLIENT.value: ("--voucher", "voucher_id"),
}


def missing_binding(roles: list[str], claims: dict[str, str | None]) -> str | None:
    """The one-line complaint for the first role whose tenant is not given, else None."""
    for role in roles:
        binding = _BINDINGS.get(role)
        if binding and not claims.get(binding[1]):
            flag, _claim = binding
            return (f"seteli-token: role {role} needs {flag} <id> "
                    f"(every service refuses a {role} token without it)")
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seteli-token", description="Mint a development bearer token "
                                     "(HS256, accepted only by services running with ENVIRONMENT=development).")
    parser.add_argument("--role", action="append", required=True, choices=[r.value for r in Role],
                        help="a role of the token (repeat for several)")
    parser.add_argument("--funder", dest="funder_id", help="the funder a funder role belongs to, e.g. 091")
    parser.add_argument("--provider", dest="provider_id", help="the provider id a provider role belongs to")
    parser.add_argument("--voucher", dest="voucher_id", help="the voucher id a client token belongs to")
    parser.add_argument("--subject", default=None)
    parser.add_argument("--ttl", type=int, default=8 * 3600, help="lifetime in seconds")
    parser.add_argument("--claims", action="store_true", help="print the claims instead of the token")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    claims = {"funder_id": args.funder_id, "provider_id": args.provider_id, "voucher_id": args.voucher_id}
    complaint = missing_binding(args.role, claims)
    if complaint:
        print(complaint, file=sys.stderr)
        return 2
    settings = ServiceSettings(environment="development")
    subject = args.subject or f"dev:{args.role[0]}:{args.funder_id or args.provider_id or args.voucher_id or 'op'}"
    token = mint(subject, args.role, secret=settings.dev_signing_secret, issuer=settings.jwt_issuer,
                 audience=settings.jwt_audience, ttl=args.ttl, **claims)
    if args.claims:
        print(json.dumps(jwt.decode(token, options={"verify_signature": False}), indent=2))
    else:
        print(token)
    return 0


def run() -> None:
    """The console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
