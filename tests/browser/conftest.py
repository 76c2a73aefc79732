"""The whole system (the four services on PostgreSQL and RabbitMQ, as tests/conftest.py starts them)
plus the web portal as its own process, a small world of funders, providers and vouchers made through
the services' APIs, and a real headless Chromium (Debian's ``chromium``, driven by Playwright; no
browser is downloaded)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from seteli_shared.auth import mint
from seteli_shared.devtools import random_business_id
from seteli_shared.testing import eventually
from seteli_shared.ports import free_port


ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FUNDER = "091"


def bearer(role: str, **claims: str) -> dict:
    return {"Authorization": f"Bearer {mint(f'portal-test:{role}', [role], **claims)}"}


OPERATOR = bearer("operator")
APPROVER = bearer("funder_provider_approver", funder_id=FUNDER)
DECISION_MAKER = bearer("funder_decision_maker", funder_id=FUNDER)


def chromium_executable() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium; installed with apt-get when missing and we may (root), else the browser tests
    are skipped saying why."""
    path = chromium_executable()
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=900)
        path = chromium_executable()
    if path is None:
        pytest.skip("browser tests skipped: no Chromium at /usr/bin/chromium and it could not be installed "
                    "(as root: apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("browser tests skipped: the playwright package is not installed (make bootstrap)")
    return path


@pytest.fixture(scope="module")
async def chromium_browser(chromium):  # noqa: ANN001
    """One headless Chromium per module (Playwright makes it a fresh temporary profile)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser(chromium_browser):  # noqa: ANN001
    """A fresh browser context per test (its own cookies and storage), a laptop's viewport, Finnish."""
    context = await chromium_browser.new_context(viewport={"width": 1100, "height": 900}, locale="fi-FI")
    try:
        yield context
    finally:
        await context.close()


async def screenshot(page, name: str) -> Path:  # noqa: ANN001
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="module")
async def portal(system, amqp_url, postgres_admin_dsn, tmp_path_factory):  # noqa: ANN001
    """The portal as its own process, pointed at the system's services, its sessions in a PostgreSQL
    database of its own (as several instances behind one address would share them)."""
    from conftest import PostgresDatabases  # the root conftest

    port = free_port()
    log = tmp_path_factory.mktemp("portal") / "portal.log"
    dbs = PostgresDatabases(postgres_admin_dsn)
    database = await dbs.create("portal")
    system.databases["portal"] = database
    env = dict(os.environ, ENVIRONMENT="test", PORTAL_URL=f"http://127.0.0.1:{port}", AMQP_URL=amqp_url,
               BUS_NAMESPACE=system.namespace, DATABASE_URL=database, TRUSTED_PROXIES="",
               **{f"{name.upper()}_URL": url for name, url in system.urls.items()})
    proc = subprocess.Popen([str(BIN / "seteli-portal"), "serve", "--port", str(port)], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=2) as c:
            while True:
                try:
                    if (await c.get(f"{url}/health/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the portal did not start:\n{log.read_text()}")
                time.sleep(0.1)
        system.logs["portal"] = log
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        await dbs.drop_all()


@dataclass
class World:
    """What the tests walk through: funder 091 with its home care rulebook; providers A (30.00 EUR/h) and
    B (27.00 EUR/h) approved, C registered only; voucher 1 (no provider yet) for the client tests,
    voucher 2 chosen for B for the charging tests, voucher 3 of funder 092."""

    providers: dict[str, str] = field(default_factory=dict)
    vouchers: dict[str, dict] = field(default_factory=dict)


@pytest.fixture(scope="module")
async def world(system) -> World:  # noqa: ANN001
    w = World()
    registry = system.client("registry", headers=OPERATOR)
    vouchers = system.client("vouchers", headers=DECISION_MAKER)
    today = date.today()
    for funder, name in ((FUNDER, "Helsingin kaupunki"), ("092", "Vantaan kaupunki")):
        r = await registry.post("/funders", json={"funder_id": funder, "name": name, "kind": "municipality"})
        assert r.status_code == 201, r.text
        r = await registry.post(f"/funders/{funder}/rulebooks", headers=bearer("funder_provider_approver", funder_id=funder),
                                json={"category": "home_care", "rulebook_version": "2026.1",
                                      "title": "Kotihoidon palveluseteli"})
        assert r.status_code == 201, r.text
    for key, name, price, langs, muni in (("A", "Kotihoiva Oy", 3000, ["fi", "sv"], "091"),
                                          ("B", "Hoivapalvelu Bee Oy", 2700, ["fi"], "091"),
                                          ("C", "Uusi Hoiva Oy", None, ["fi"], "091")):
        r = await registry.post("/providers", json={"business_id": random_business_id(), "name": name,
                                                    "iban": "FI2112345600000785"})
        assert r.status_code == 201, r.text
        pid = w.providers[key] = r.json()["id"]
        r = await registry.patch(f"/providers/{pid}", json={
            "contact_email": f"info{key.lower()}@example.fi", "contact_phone": "+358401234567", "languages": langs,
            "prepayment_registered": True, "prepayment_checked_on": today.isoformat(),
            "liability_insurance": {"insurer": "Vakuutus Oy", "policy_number": f"L-{key}",
                                    "valid_until": (today + timedelta(days=365)).isoformat()},
            "patient_insurance": {"insurer": "Vakuutus Oy", "policy_number": f"P-{key}",
                                  "valid_until": (today + timedelta(days=365)).isoformat()},
            "municipalities": [muni], "service_units": [{"name": f"{name} Kallio", "street_address": "Fleminginkatu 1",
                                                          "postal_code": "00530", "municipality_code": muni}]})
        assert r.status_code == 200, r.text
        if price is None:
            continue
        r = await registry.post(f"/providers/{pid}/approvals", headers=APPROVER, json={"category": "home_care"})
        assert r.status_code == 201, r.text
        r = await registry.post(f"/providers/{pid}/price-lists", json={
            "funder_id": FUNDER, "category": "home_care", "unit_price_cents": price,
            "effective_from": today.isoformat()})
        assert r.status_code == 201, r.text
        if r.json()["status"] != "published":
            r = await registry.post(f"/price-lists/{r.json()['id']}/approve", headers=APPROVER)
            assert r.status_code == 200, r.text

    async def issue(key: str, funder: str, ref: str) -> None:
        decision = {"funder_id": funder, "decision_ref": ref, "client_ref": f"asiakas-{ref.lower()}",
                    "category": "home_care", "units_per_period": "20", "period": "month",
                    "value_per_unit_cents": 2500, "valid_from": (today - timedelta(days=40)).isoformat(),
                    "valid_until": (today + timedelta(days=300)).isoformat()}
        who = bearer("funder_decision_maker", funder_id=funder)

        async def issued():  # noqa: ANN202  (vouchers learns of the funder from the bus)
            r = await vouchers.post("/vouchers", json=decision, headers=who)
            return r.json() if r.status_code == 201 else None

        w.vouchers[key] = await eventually(issued, timeout=60)

    await issue("v1", FUNDER, "P-1")
    await issue("v2", FUNDER, "P-2")
    await issue("v3", "092", "P-3")

    async def compared():  # noqa: ANN202  (vouchers knows both approvals and their prices)
        r = await system.client("vouchers", headers=OPERATOR).get(f"/vouchers/{w.vouchers['v1']['id']}/providers")
        items = r.json().get("items", []) if r.status_code == 200 else []
        return len([o for o in items if o["unit_price_cents"]]) == 2

    await eventually(compared, timeout=60)

    async def chosen():  # noqa: ANN202  (the funder chooses B for voucher 2 on the client's behalf)
        r = await vouchers.post(f"/vouchers/{w.vouchers['v2']['id']}/provider", json={"provider_id": w.providers["B"]})
        return r.status_code == 200

    await eventually(chosen, timeout=60)
    payments = system.client("payments", headers=bearer("provider_charger", provider_id=w.providers["B"]))

    async def payments_knows():  # noqa: ANN202  (a first charge proves payments has the voucher and the choice)
        r = await payments.post("/charges", json={"voucher_code": w.vouchers["v2"]["voucher_code"],
                                                  "provider_reference": "first-visit", "units": "1",
                                                  "service_date": today.isoformat()})
        return r.status_code in (200, 201)

    await eventually(payments_knows, timeout=60)
    return w


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def open_signed_in(portal: str, role: str | None = None, **tenant: str) -> httpx.AsyncClient:
    """An HTTP client with the portal's cookies, signed in through the development sign-in form
    (``role`` None: anonymous)."""
    c = httpx.AsyncClient(base_url=portal, timeout=20, follow_redirects=False)
    r = await c.get("/signin")
    csrf = CSRF.search(r.text).group(1)
    if role is not None:
        r = await c.post("/signin/dev", data={"csrf": csrf, "role": role, **tenant})
        assert r.status_code == 303, r.text
    return c


async def open_client(portal: str, voucher: dict) -> httpx.AsyncClient:
    c = httpx.AsyncClient(base_url=portal, timeout=20, follow_redirects=False)
    csrf = CSRF.search((await c.get("/signin")).text).group(1)
    r = await c.post("/signin/client", data={"csrf": csrf, "voucher_code": voucher["voucher_code"],
                                              "client_login_code": voucher["client_login_code"]})
    assert r.status_code == 303 and r.headers["location"] == "/client", r.text
    return c


@asynccontextmanager
async def signed_in(portal: str, role: str | None = None, **tenant: str):  # noqa: ANN201
    c = await open_signed_in(portal, role, **tenant)
    try:
        yield c
    finally:
        await c.aclose()


@asynccontextmanager
async def client_signed_in(portal: str, voucher: dict):  # noqa: ANN201
    c = await open_client(portal, voucher)
    try:
        yield c
    finally:
        await c.aclose()
