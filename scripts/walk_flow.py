"""Walk the first flow by hand against a running system (`make run`): register the funder (an
answer that it is there already is fine), register and approve a provider, issue a voucher, the client logs in with its voucher code and chooses the provider, the
provider charges 100.00 EUR, settle, read the report. Each party calls with its own development
token (as `seteli-token` mints them; accepted only with ENVIRONMENT=development).
When the services do not answer it says so in one line and exits 1.

    .venv/bin/python scripts/walk_flow.py [--funder 091]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import date, timedelta

import httpx

from seteli_shared.auth import mint
from seteli_shared.devtools import random_business_id
from seteli_shared.money import euros

REGISTRY = os.environ.get("REGISTRY_URL", "http://127.0.0.1:8001")
VOUCHERS = os.environ.get("VOUCHERS_URL", "http://127.0.0.1:8002")
PAYMENTS = os.environ.get("PAYMENTS_URL", "http://127.0.0.1:8003")
REPORTING = os.environ.get("REPORTING_URL", "http://127.0.0.1:8004")


FUNDER_NAMES = {"091": "Helsingin kaupunki", "049": "Espoon kaupunki", "092": "Vantaan kaupunki"}


class NotAnswering(Exception):
    pass


def step(title: str, response: httpx.Response, *, also_fine: tuple[int, ...] = ()) -> dict:
    print(f"\n== {title}: HTTP {response.status_code}")
    try:
        body = response.json()
        print(json.dumps(body, indent=2, ensure_ascii=False))
    except ValueError:
        body = {}
        print(response.text)
    if response.status_code >= 400 and response.status_code not in also_fine:
        sys.exit(1)
    return body


def items(body):  # noqa: ANN001, ANN201
    """The rows of a list answer: ``{"items": [...], "next_cursor": ...}`` (or a bare list)."""
    return body["items"] if isinstance(body, dict) and "items" in body else body


def check_up(c: httpx.Client) -> None:
    """Say so before anything else when the system is not running."""
    for url in (REGISTRY, VOUCHERS, PAYMENTS, REPORTING):
        try:
            c.get(f"{url}/health/live", timeout=3)
        except httpx.TransportError:
            raise NotAnswering(url) from None


def until(fn, what: str, timeout: float = 15.0):  # noqa: ANN001, ANN201
    """Retry ``fn`` until it returns something truthy: events take a moment to cross the bus."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = fn()
        if result:
            return result
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--funder", default="091")
    args = parser.parse_args()
    def as_(role: str, **claims) -> dict:  # noqa: ANN003
        return {"Authorization": f"Bearer {mint(f'walk:{role}', [role], **claims)}"}

    c = httpx.Client(timeout=10)
    check_up(c)
    operator = as_("operator")
    step(f"operator staff register funder {args.funder} (one already there, 200 or 409 funder_exists, is fine)",
         c.post(f"{REGISTRY}/funders", headers=operator, json={
             "funder_id": args.funder, "name": FUNDER_NAMES.get(args.funder, f"Kunta {args.funder}"),
             "kind": "municipality"}), also_fine=(409,))
    step(f"the funder's provider approver publishes its home care rulebook (the same again: 200)",
         c.post(f"{REGISTRY}/funders/{args.funder}/rulebooks", json={
             "category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoidon palveluseteli"},
                headers=as_("funder_provider_approver", funder_id=args.funder)))
    provider = step("operator staff register a provider", c.post(f"{REGISTRY}/providers", headers=operator, json={
        "business_id": random_business_id(), "name": "Kotihoiva Oy", "iban": "FI2112345600000785"}))
    step("the funder's provider approver approves it for home care",
         c.post(f"{REGISTRY}/providers/{provider['id']}/approvals", json={"category": "home_care"},
                headers=as_("funder_provider_approver", funder_id=args.funder)))
    today = date.today()
    decision_ref = f"D-{random.randint(1, 10**9)}"

    def issue():  # noqa: ANN202
        r = c.post(f"{VOUCHERS}/vouchers", headers=as_("funder_decision_maker", funder_id=args.funder), json={
            "decision_ref": decision_ref, "client_ref": f"C-{random.randint(1, 10**9)}",
            "category": "home_care", "units_per_period": "20", "period": "month", "value_per_unit_cents": 2500,
            "valid_from": (today - timedelta(days=30)).isoformat(),
            "valid_until": (today + timedelta(days=335)).isoformat()})
        return r if r.status_code == 201 else None

    voucher = step("the funder's decision maker issues a voucher (with the client's login code for the letter)",
                   until(issue, "vouchers to learn of the funder"))
    login = step("the client logs in with the voucher code and the login code from the decision letter", c.post(
        f"{VOUCHERS}/client-sessions", json={"voucher_code": voucher["voucher_code"],
                                             "client_login_code": voucher["client_login_code"]}))
    client = {"Authorization": f"Bearer {login['access_token']}"}
    until(lambda: c.post(f"{VOUCHERS}/vouchers/{voucher['id']}/provider", headers=client,
                         json={"provider_id": provider["id"]}).status_code == 200, "vouchers to learn of the approval")
    step("the client chose the provider", c.get(f"{VOUCHERS}/vouchers/{voucher['id']}", headers=client))
    charger = as_("provider_charger", provider_id=provider["id"])

    def charge():  # noqa: ANN202
        r = c.post(f"{PAYMENTS}/charges", headers=charger, json={
            "voucher_id": voucher["id"], "provider_reference": "visit-1",
            "service_date": today.isoformat(), "units": "4", "unit_price_cents": 2500})
        return r if r.status_code in (200, 201) else None

    step("the provider charges 4 h x 25.00 EUR", until(charge, "payments to learn of the voucher"))
    settlements = step("operator staff run the settlement", c.post(f"{PAYMENTS}/settlements/run", headers=operator))
    mine = [s for s in items(settlements) if s["provider_id"] == provider["id"]]
    print(f"\nsettled: gross {euros(mine[0]['gross_cents'])} EUR, fee {euros(mine[0]['fee_cents'])} EUR, "
          f"net {euros(mine[0]['net_cents'])} EUR")
    viewer = as_("funder_reporting", funder_id=args.funder)
    figures = f"{REPORTING}/funders/{args.funder}/figures"
    until(lambda: c.get(figures, headers=viewer).json()["charges_settled"] > 0, "reporting")
    step(f"report for funder {args.funder}", c.get(figures, headers=viewer))
    step("the funder reads its audit trail in payments",
         c.get(f"{PAYMENTS}/audit", headers=as_("funder_finance", funder_id=args.funder)))


if __name__ == "__main__":
    try:
        main()
    except NotAnswering as down:
        sys.exit(f"the services are not answering at {down} — start `make run` first")
    except httpx.TransportError as exc:  # the system went away half way
        where = exc.request.url.copy_with(path="/", query=None) if exc.request else REGISTRY
        sys.exit(f"the services stopped answering ({str(where).rstrip('/')}: {type(exc).__name__}) "
                 "— is `make run` still going?")
