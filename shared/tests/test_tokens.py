"""Token verification: what a production service accepts and refuses."""
from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from seteli_shared.auth import InvalidToken, Role, TokenVerifier, mint
from seteli_shared.settings import ServiceSettings


@pytest.fixture
def rsa_jwks(tmp_path):  # noqa: ANN001, ANN201
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update(kid="k1", use="sig", alg="RS256")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public]}))
    return key, path


def production(jwks_path) -> ServiceSettings:  # noqa: ANN001
    return ServiceSettings(environment="production", jwks_url=str(jwks_path), jwt_issuer="https://id.example",
                           jwt_audience="seteli", data_dir="/tmp/seteli-test-var")


def test_production_accepts_tokens_signed_by_a_jwks_key(rsa_jwks):  # noqa: ANN001
    key, path = rsa_jwks
    token = mint("u1", ["funder_finance"], key=key, algorithm="RS256", kid="k1", issuer="https://id.example",
                 funder_id="091")
    p = TokenVerifier(production(path)).verify(token)
    assert (p.subject, p.roles, p.funder_id) == ("u1", frozenset({Role.FUNDER_FINANCE}), "091")


def test_production_refuses_the_development_secret(rsa_jwks):  # noqa: ANN001
    _, path = rsa_jwks
    token = mint("u1", ["operator"], issuer="https://id.example")
    with pytest.raises(InvalidToken, match="only in development"):
        TokenVerifier(production(path)).verify(token)


def test_production_refuses_a_key_not_in_the_jwks(rsa_jwks):  # noqa: ANN001
    _, path = rsa_jwks
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = mint("u1", ["operator"], key=other, algorithm="RS256", kid="k1", issuer="https://id.example")
    with pytest.raises(InvalidToken):
        TokenVerifier(production(path)).verify(token)


def test_production_needs_a_jwks():
    with pytest.raises(ValueError, match="JWKS_URL"):
        ServiceSettings(environment="production", data_dir="/tmp/seteli-test-var")


def test_development_accepts_its_secret_and_checks_expiry_and_tenant():
    v = TokenVerifier(ServiceSettings(environment="development", data_dir="/tmp/seteli-test-var"))
    assert v.verify(mint("dev", ["provider_charger"], provider_id="p1")).provider_id == "p1"
    with pytest.raises(InvalidToken, match="expired"):
        v.verify(mint("dev", ["operator"], now=int(time.time()) - 4000, ttl=3600))
    with pytest.raises(InvalidToken, match="provider_id"):
        v.verify(mint("dev", ["provider_charger"]))
    with pytest.raises(InvalidToken, match="unknown role"):
        v.verify(mint("dev", ["superuser"]))
    unsigned = jwt.encode({"sub": "x", "roles": ["operator"], "iss": "seteli-dev", "aud": "seteli",
                           "iat": int(time.time()), "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(InvalidToken, match="not accepted"):
        v.verify(unsigned)


@pytest.mark.parametrize("claims", [
    {"funder_id": ["091"]}, {"funder_id": 91}, {"funder_id": {"id": "091"}}, {"funder_id": "ZZZ"},
    {"roles": "operator"}, {"roles": [1]}, {"provider_id": ["p1"]}, {"voucher_id": 7},
])
def test_claims_that_break_the_contract_are_an_invalid_token(claims):  # noqa: ANN001
    v = TokenVerifier(ServiceSettings(environment="development", data_dir="/tmp/seteli-test-var"))
    base = {"roles": ["funder_finance"], "funder_id": "091"}
    now = int(time.time())
    token = jwt.encode({"sub": "x", "iss": "seteli-dev", "aud": "seteli", "iat": now, "exp": now + 60,
                        **base, **claims}, v.dev_secret, algorithm="HS256")
    with pytest.raises(InvalidToken, match="contract"):
        v.verify(token)


def test_a_subject_that_is_a_personal_identity_code_is_refused():
    v = TokenVerifier(ServiceSettings(environment="development", data_dir="/tmp/seteli-test-var"))
    with pytest.raises(InvalidToken, match="personal data"):
        v.verify(mint("131052-308T", ["operator"]))
