"""Verifying and issuing bearer JWTs.

Callers present OAuth2 bearer JWTs, verified locally: signature, issuer, audience, expiry, and the
claims contract. Production keys come from a JWKS (asymmetric: RS256/ES256/PS256/EdDSA); the
development HS256 secret is accepted only when ENVIRONMENT is development or test.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jwt

from ..ids import new_id
from ..settings import DEV_SIGNING_SECRET, ServiceSettings
from .principal import InvalidToken, Principal

ASYMMETRIC = ["RS256", "ES256", "PS256", "EdDSA"]

#: what a caller is told about a token the library refused (never the decoder's own words)
_PROBLEMS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is for another audience"),
    (jwt.InvalidIssuerError, "the token is from an issuer this service does not trust"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.PyJWKClientError, "the token's signing key is not known"),
]


#: verified tokens kept (by their exact string) until they expire, at most this many, at most this long
CACHE_SIZE = 4096
CACHE_SECONDS = 300


class TokenVerifier:
    def __init__(self, settings: ServiceSettings):
        #: token -> (principal, monotonic deadline): a token verified once is not verified again (signature,
        #: claims) until its ``exp`` or CACHE_SECONDS (a key removed from the JWKS stops a token within that)
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
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
            raise InvalidToken("this signing algorithm is not accepted")
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
        hit = self._cache.get(token)
        if hit is not None:
            if time.time() < hit[1]:
                self._cache.move_to_end(token)
                return hit[0]
            del self._cache[token]
        principal, exp = self._verify(token)
        self._cache[token] = (principal, min(exp, time.time() + CACHE_SECONDS))
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
            if not isinstance(header, dict):
                raise InvalidToken("the token is malformed")
            key, algorithms = self._key_for(token, header)
            claims = jwt.decode(token, key, algorithms=algorithms, audience=self.audience, issuer=self.issuer,
                                options={"require": ["exp", "iat", "sub", "iss", "aud"]}, leeway=30)
        except InvalidToken:
            raise
        except Exception as exc:  # noqa: BLE001  (any decoder failure is a 401, never a 500)
            problem = next((text for cls, text in _PROBLEMS if isinstance(exc, cls)), "the token is malformed")
            raise InvalidToken(problem) from None
        if not isinstance(claims, dict):
            raise InvalidToken("the token is malformed")
        exp = claims.get("exp")
        # a cached token stops at its exp (the leeway is granted to a fresh verification only)
        return Principal.from_claims(claims), float(exp) if isinstance(exp, (int, float)) else 0.0


def mint(subject: str, roles: list[str], *, secret: str = DEV_SIGNING_SECRET, issuer: str = "seteli-dev",
         audience: str = "seteli", ttl: int = 3600, key: Any = None, kid: str | None = None,
         algorithm: str = "HS256", now: int | None = None, **claims: Any) -> str:
    """A signed token; HS256 with the development secret unless a private ``key`` is given."""
    iat = int(now if now is not None else time.time())
    payload = {"sub": subject, "roles": roles, "iss": issuer, "aud": audience, "iat": iat, "exp": iat + ttl,
               "jti": new_id(), **{k: v for k, v in claims.items() if v is not None}}
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key if key is not None else secret, algorithm=algorithm, headers=headers)
