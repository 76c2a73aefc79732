"""`seteli-token` mints only tokens a service would accept: a role bound to a tenant needs that tenant."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seteli_shared.auth import TokenVerifier, mint
from seteli_shared.settings import ServiceSettings

SCRIPT = Path(sys.executable).parent / "seteli-token"


def seteli_token(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("role", "flag"), [
    ("funder_finance", "--funder"), ("funder_decision_maker", "--funder"), ("funder_case_system", "--funder"),
    ("provider_charger", "--provider"), ("provider_billing_system", "--provider"), ("client", "--voucher"),
])
def test_a_role_without_its_tenant_is_refused_at_once(role, flag):  # noqa: ANN001
    r = seteli_token("--role", role)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert role in lines[0] and flag in lines[0]
    assert "Traceback" not in r.stderr


def test_the_wrong_tenant_flag_does_not_count():
    r = seteli_token("--role", "funder_finance", "--provider", "p-1")
    assert r.returncode == 2 and "--funder" in r.stderr


def test_a_second_role_is_checked_too():
    r = seteli_token("--role", "funder_finance", "--role", "provider_charger", "--funder", "091")
    assert r.returncode == 2 and "provider_charger" in r.stderr and "--provider" in r.stderr


@pytest.mark.parametrize("args", [
    ["--role", "operator"],
    ["--role", "funder_finance", "--funder", "091"],
    ["--role", "provider_charger", "--provider", "p-1"],
    ["--role", "client", "--voucher", "v-1"],
])
def test_a_complete_token_is_minted_and_a_development_service_accepts_it(args):  # noqa: ANN001
    r = seteli_token(*args)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    principal = TokenVerifier(ServiceSettings(environment="development")).verify(token)
    assert {role.value for role in principal.roles} == {args[1]}
    if len(args) == 4:
        assert args[3] in {principal.funder_id, principal.provider_id, principal.voucher_id}


def test_claims_are_printed_as_json():
    r = seteli_token("--role", "funder_reporting", "--funder", "091", "--claims")
    assert r.returncode == 0
    claims = json.loads(r.stdout)
    assert claims["funder_id"] == "091" and claims["roles"] == ["funder_reporting"]


def test_mint_stays_importable_from_auth():
    assert callable(mint)
