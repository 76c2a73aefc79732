"""Walk the first flow by hand against a running system (`make run`): register and approve a
provider, issue a voucher, choose the provider, charge 100.00 EUR, settle, read the report.

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

from seteli_shared.devtools import random_business_id

REGISTRY = os.environ.get("REGISTRY_URL", "http://127.0.0.1:8001")
VOUCHERS = os.environ.get("VOUCHERS_URL", "http://127.0.0.1:8002")
PAYMENTS = os.environ.get("PAYMENTS_URL", "http://127.0.0.1:8003")
REPORTING = os.environ.get("REPORTING_URL", "http://127.0.0.1:8004")


def step(title: str, response: httpx.Response) -> dict:
    print(f"\n== {title}: HTTP {response.status_code}")
    body = response.json()
    print(json.dumps(body, indent=2, ensure_ascii=False))
    if response.status_code >= 400:
        sys.exit(1)
    return body


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
    headers = dict(h.split(": ", 1) for h in os.environ.get("SETELI_HEADERS", "").split("\n") if h)
    c = httpx.Client(timeout=10, headers=headers)
    provider = step("register a provider", c.post(f"{REGISTRY}/providers", json={
        "business_id": random_business_id(), "name": "Kotihoiva Oy", "iban": "FI2112345600000785"}))
    step("the funder approves it for home care", c.post(f"{REGISTRY}/providers/{provider['id']}/approvals",
                                                         json={"funder_id": args.funder, "category": "home_care"}))
    today = date.today()
    voucher = step("the funder issues a voucher", c.post(f"{VOUCHERS}/vouchers", json={
        "funder_id": args.funder, "decision_ref": f"D-{random.randint(1, 10**9)}", "client_ref": f"C-{random.randint(1, 10**9)}",
        "category": "home_care", "units_per_period": "20", "period": "month", "value_per_unit_cents": 2500,
        "valid_from": (today - timedelta(days=30)).isoformat(), "valid_until": (today + timedelta(days=335)).isoformat()}))
    until(lambda: c.post(f"{VOUCHERS}/vouchers/{voucher['id']}/provider",
                         json={"provider_id": provider["id"]}).status_code == 200, "vouchers to learn of the approval")
    step("the client chose the provider", c.get(f"{VOUCHERS}/vouchers/{voucher['id']}"))

    def charge():  # noqa: ANN202
        r = c.post(f"{PAYMENTS}/charges", json={
            "voucher_id": voucher["id"], "provider_id": provider["id"], "provider_reference": "visit-1",
            "service_date": today.isoformat(), "units": "4", "unit_price_cents": 2500})
        return r if r.status_code in (200, 201) else None

    step("the provider charges 4 h x 25.00 EUR", until(charge, "payments to learn of the voucher"))
    settlements = step("settlement run", c.post(f"{PAYMENTS}/settlements/run"))
    mine = [s for s in settlements if s["provider_id"] == provider["id"]]
    print(f"\nsettled: gross {mine[0]['gross_cents'] / 100:.2f} EUR, fee {mine[0]['fee_cents'] / 100:.2f} EUR, "
          f"net {mine[0]['net_cents'] / 100:.2f} EUR")
    until(lambda: c.get(f"{REPORTING}/funders/{args.funder}/figures").json()["charges_settled"] > 0, "reporting")
    step(f"report for funder {args.funder}", c.get(f"{REPORTING}/funders/{args.funder}/figures"))


if __name__ == "__main__":
    main()
