"""The web portal against the whole system (four services on PostgreSQL and RabbitMQ, the portal as
its own process): who may see each page, and the three walks a person makes in a real Chromium: a
client compares, chooses and gives feedback; a provider charges by code and uploads the month's CSV;
a funder opens the report and sees the chart. Screenshots go to var/screenshots/."""
from __future__ import annotations

from datetime import date, timedelta

import httpx
import pytest

from seteli_shared.testing import eventually

from .conftest import FUNDER, World, client_signed_in, open_client, open_signed_in, screenshot, signed_in

pytestmark = pytest.mark.e2e

PUBLIC = ["/", "/compare", "/signin", "/compare?funder=091&category=home_care&sort=own_share&voucher_value=25"]
CLIENT_PAGES = ["/client"]
PROVIDER_PAGES = ["/provider", "/provider/apply", "/provider/charge", "/provider/charges", "/provider/charges.csv",
                  "/provider/settlements"]
FUNDER_PAGES = ["/funder", "/funder/applications", "/funder/vouchers", "/funder/report", "/funder/audit",
                "/funder/report.csv", "/funder/report/audit.json", "/funder/charts/monthly-volume.svg", "/funder/charts/monthly-volume.png",
                "/funder/charts/price-development.svg?category=home_care",
                "/funder/charts/price-development.png?category=home_care"]
#: every form of the portal, by the area whose users may send it
POSTS = {"client": ["/client/choose", "/client/feedback"],
         "provider": ["/provider/apply", "/provider/charge", "/provider/charges/upload"],
         "funder": ["/funder/applications/x/approve", "/funder/applications/x/reject"],
         "operator": ["/operator/settlements/run"]}
OPERATOR_PAGES = ["/operator", "/operator/audit"]
STAFF_ROLES = {"operator": {}, "funder_reporting": {"funder_id": FUNDER},
               "provider_charger": None}  # provider id filled from the world


# ------------------------------------------------------------------ who may see what
async def test_anonymous_sees_only_the_public_pages(portal, world: World):  # noqa: ANN001
    async with signed_in(portal) as c:
        for path in PUBLIC + [f"/compare/providers/{world.providers['A']}?funder={FUNDER}&category=home_care"]:
            r = await c.get(path)
            assert r.status_code == 200, (path, r.status_code)
        for path in CLIENT_PAGES + PROVIDER_PAGES + FUNDER_PAGES + OPERATOR_PAGES:
            r = await c.get(path)
            assert (r.status_code, r.headers.get("location", "").split("?")[0]) == (303, "/signin"), path
        r = await c.post("/provider/charge", data={"voucher_code": world.vouchers["v2"]["voucher_code"]})
        assert r.status_code == 401


async def test_each_role_sees_its_own_area_only(portal, world: World):  # noqa: ANN001
    who = {"client": await open_client(portal, world.vouchers["v1"]),
           "provider": await open_signed_in(portal, "provider_charger", provider_id=world.providers["B"]),
           "funder": await open_signed_in(portal, "funder_reporting", funder_id=FUNDER),
           "operator": await open_signed_in(portal, "operator")}
    areas = {"client": CLIENT_PAGES, "provider": PROVIDER_PAGES, "funder": FUNDER_PAGES, "operator": OPERATOR_PAGES}
    try:
        for name, client in who.items():
            for area, pages in areas.items():
                for path in pages:
                    r = await client.get(path)
                    if area == name:
                        # the funder's CSV is there once reporting has the monthly report
                        assert r.status_code == 200, (name, path, r.status_code, r.text[:300])
                    else:
                        assert r.status_code == 403, (name, path, r.status_code)
    finally:
        for client in who.values():
            await client.aclose()


async def test_every_form_refuses_anonymous_callers_and_other_roles(portal, world: World):  # noqa: ANN001
    from .conftest import CSRF

    who = {"client": await open_client(portal, world.vouchers["v1"]),
           "provider": await open_signed_in(portal, "provider_charger", provider_id=world.providers["B"]),
           "funder": await open_signed_in(portal, "funder_provider_approver", funder_id=FUNDER),
           "operator": await open_signed_in(portal, "operator")}
    try:
        async with signed_in(portal) as anonymous:
            for paths in POSTS.values():
                for path in paths:
                    assert (await anonymous.post(path, data={"x": "1"})).status_code == 401, path
        for name, client in who.items():
            csrf = CSRF.search((await client.get("/signin")).text).group(1)
            for area, paths in POSTS.items():
                if area == name:
                    continue
                for path in paths:  # with the session's own CSRF token: refused for the role alone
                    r = await client.post(path, data={"csrf": csrf, "provider_id": world.providers["A"]})
                    assert r.status_code == 403, (name, path, r.status_code)
    finally:
        for client in who.values():
            await client.aclose()


async def test_a_client_never_sees_another_voucher(portal, world: World):  # noqa: ANN001
    async with client_signed_in(portal, world.vouchers["v1"]) as c:
        page = (await c.get("/client")).text
        assert world.vouchers["v1"]["voucher_code"] in page
        assert world.vouchers["v2"]["voucher_code"] not in page
        # the voucher comes from the token: there is no address of another voucher to try
        assert (await c.get(f"/client?voucher_id={world.vouchers['v2']['id']}")).text.count(
            world.vouchers["v2"]["voucher_code"]) == 0
        assert (await c.get(f"/client/{world.vouchers['v2']['id']}")).status_code == 404


async def test_a_provider_never_sees_another_providers_charges(portal, world: World, system):  # noqa: ANN001
    async with signed_in(portal, "provider_charger", provider_id=world.providers["B"]) as b, \
            signed_in(portal, "provider_manager", provider_id=world.providers["A"]) as a:
        assert "first-visit" in (await b.get("/provider/charges")).text
        assert "first-visit" in (await b.get("/provider/charges.csv")).text
        assert "first-visit" not in (await a.get("/provider/charges")).text
        assert "first-visit" not in (await a.get("/provider/charges.csv")).text
        # B's settlement statement is not A's to read
        from .conftest import OPERATOR
        run = await system.client("payments", headers=OPERATOR).post("/settlements/run")
        assert run.status_code == 200, run.text
        mine = [s["id"] for s in run.json() if s["provider_id"] == world.providers["B"]]
        assert mine, run.json()
        r = await b.get(f"/provider/settlements/{mine[0]}")
        assert r.status_code == 200 and "first-visit" in r.text
        assert "first-visit" in (await b.get(f"/provider/settlements/{mine[0]}/statement.csv")).text
        assert (await a.get(f"/provider/settlements/{mine[0]}")).status_code == 404
        assert (await a.get(f"/provider/settlements/{mine[0]}/statement.csv")).status_code == 404


async def test_a_funder_sees_only_its_own_vouchers(portal, world: World):  # noqa: ANN001
    async with signed_in(portal, "funder_decision_maker", funder_id=FUNDER) as hki, \
            signed_in(portal, "funder_decision_maker", funder_id="092") as vantaa:
        mine = (await hki.get("/funder/vouchers")).text
        theirs = (await vantaa.get("/funder/vouchers")).text
        assert world.vouchers["v1"]["voucher_code"] in mine and world.vouchers["v3"]["voucher_code"] not in mine
        assert world.vouchers["v3"]["voucher_code"] in theirs and world.vouchers["v1"]["voucher_code"] not in theirs


async def test_forms_without_the_sessions_csrf_token_are_refused(portal, world: World):  # noqa: ANN001
    async with signed_in(portal, "provider_charger", provider_id=world.providers["B"]) as c:
        r = await c.post("/provider/charge", data={"csrf": "forged", "voucher_code": "X", "provider_reference": "x",
                                                   "service_date": date.today().isoformat(), "units": "1"})
        assert r.status_code == 403
    async with httpx.AsyncClient(base_url=portal) as fresh:  # no session at all
        r = await fresh.post("/signin/dev", data={"role": "operator"})
        assert r.status_code == 403


async def test_session_cookie_is_httponly_and_samesite_lax(portal):  # noqa: ANN001
    async with httpx.AsyncClient(base_url=portal) as c:
        r = await c.get("/signin")
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        assert "default-src 'self'" in r.headers["content-security-policy"]


async def test_signing_out_ends_the_session_on_the_server_and_a_copied_cookie_is_refused(portal):  # noqa: ANN001
    from .conftest import CSRF

    async with signed_in(portal, "operator") as c:
        (name, copied), = c.cookies.items()
        assert (await c.get("/operator")).status_code == 200
        csrf = CSRF.search((await c.get("/operator")).text).group(1)
        assert (await c.post("/signout", data={"csrf": csrf})).status_code == 303
    async with httpx.AsyncClient(base_url=portal, cookies={name: copied}) as replay:
        r = await replay.get("/operator", follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/signin?next=/operator")


# ------------------------------------------------------------------ logins a stranger cannot break
def browser_at(portal: str, address: str) -> httpx.AsyncClient:
    """A browser calling the portal from its own address (another loopback address of this machine)."""
    return httpx.AsyncClient(base_url=portal, timeout=20, follow_redirects=False,
                             transport=httpx.AsyncHTTPTransport(local_address=address))


async def test_wrong_logins_through_the_portal_from_one_browser_never_keep_another_out(portal, world: World):  # noqa: ANN001
    """The portal calls the vouchers service from one address; it passes each browser's own on, and the
    vouchers service believes it from the portal only: 20 and more failures from one browser slow that
    browser, not the country."""
    from seteli_shared.codes import new_code

    from .conftest import CSRF

    voucher = world.vouchers["v1"]

    async def login(browser: httpx.AsyncClient, code: str, login_code: str) -> httpx.Response:
        csrf = CSRF.search((await browser.get("/signin")).text).group(1)
        return await browser.post("/signin/client", data={"csrf": csrf, "voucher_code": code,
                                                          "client_login_code": login_code})

    async with browser_at(portal, "127.0.0.2") as stranger, browser_at(portal, "127.0.0.3") as client:
        answers = [(await login(stranger, voucher["voucher_code"], "0000000000000")).status_code for _ in range(6)]
        answers += [(await login(stranger, new_code(10), "0000000000000")).status_code for _ in range(20)]
        assert answers[:5] == [401] * 5 and 429 in answers[5:], answers
        r = await login(stranger, voucher["voucher_code"], voucher["client_login_code"])
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, "the stranger's own address waits"
        r = await login(client, voucher["voucher_code"], voucher["client_login_code"])
        assert (r.status_code, r.headers.get("location")) == (303, "/client"), r.text[:500]


async def test_the_vouchers_service_believes_x_forwarded_for_only_from_the_portals_address(system, world: World):  # noqa: ANN001
    """Against the running vouchers service: a stranger (another address than the portal's) naming a new
    address in each request is still counted as itself; the portal's address naming a browser counts
    that browser."""
    voucher = world.vouchers["v3"]
    url = system.urls["vouchers"]

    def attempt(login_code: str, forwarded: str) -> dict:
        return {"json": {"voucher_code": voucher["voucher_code"], "client_login_code": login_code},
                "headers": {"X-Forwarded-For": forwarded}}

    async with httpx.AsyncClient(base_url=url, timeout=15,
                                 transport=httpx.AsyncHTTPTransport(local_address="127.0.0.4")) as stranger:
        seen = [(await stranger.post("/client-sessions", **attempt("0000000000000", f"198.51.100.{i}"))).status_code
                for i in range(6)]
        assert seen == [401] * 5 + [429], seen
    async with httpx.AsyncClient(base_url=url, timeout=15) as the_portals_address:
        seen = [(await the_portals_address.post("/client-sessions", **attempt("0000000000000", "192.0.2.201")))
                .status_code for _ in range(6)]
        assert seen == [401] * 5 + [429], seen
        r = await the_portals_address.post("/client-sessions", **attempt(voucher["client_login_code"], "192.0.2.202"))
        assert r.status_code == 200, r.text
        r = await the_portals_address.post("/client-sessions", **attempt(voucher["client_login_code"], "127.0.0.4"))
        assert r.status_code == 429, "the stranger, named by the portal, is still the stranger"


# ------------------------------------------------------------------ in a real browser
async def test_client_compares_chooses_and_gives_feedback(portal, world: World, browser, system):  # noqa: ANN001
    page = await browser.new_page()
    await page.goto(f"{portal}/compare?funder={FUNDER}&category=home_care")
    assert await page.get_attribute("html", "lang") == "fi"
    # the funders to choose from come from the registry's public list, not a typed code
    assert await page.locator("select#funder option:checked").inner_text() == "Helsingin kaupunki"
    assert "Vantaan kaupunki" in await page.inner_text("select#funder")
    await page.fill("#voucher_value", "25,00")
    await page.check("input[name=sort][value=own_share]")
    await page.click("form.filters button[type=submit]")
    rows = page.locator("main table tbody tr")
    await page.wait_for_url("**voucher_value=**")  # the filtered page, not the one the click left
    await rows.nth(1).wait_for()
    assert await rows.count() == 2
    assert "Hoivapalvelu Bee Oy" in await rows.nth(0).inner_text()  # 27.00 EUR: 2.00 of own share a unit
    assert "2,00" in await rows.nth(0).inner_text()
    assert "5,00" in await rows.nth(1).inner_text()  # Kotihoiva: 30.00 - 25.00
    await screenshot(page, "01-compare")
    await page.click("text=Kotihoiva Oy")
    main = await page.inner_text("main")
    assert "Kotihoiva Oy Kallio" in main
    # the registry's public page of the provider: its price here and the own share for this voucher
    assert "30,00\u00a0€ / tunti" in main and "5,00\u00a0€" in main and "Helsingin kaupunki" in main
    assert "FI2112345600000785" not in main and "Vakuutus Oy" not in main  # no account, no insurance
    assert await page.locator("#approvals tbody tr").count() == 1
    await screenshot(page, "02-provider-page")
    await page.click("a[hreflang=sv]")
    assert await page.get_attribute("html", "lang") == "sv"
    assert "Verksamhetsställen" in await page.inner_text("main")
    await page.click("a[hreflang=fi]")

    # the light login with the decision letter's codes
    await page.goto(f"{portal}/signin")
    await page.fill("#voucher_code", world.vouchers["v1"]["voucher_code"])
    await page.fill("#client_login_code", world.vouchers["v1"]["client_login_code"])
    await page.click("#client form button[type=submit]")
    await page.wait_for_url(f"{portal}/client")
    assert "20" in await page.inner_text("#units-left")
    assert "Et ole vielä valinnut" in await page.inner_text("#chosen")
    await screenshot(page, "03-client-voucher")
    await page.click("button[aria-label='Valitse Hoivapalvelu Bee Oy']")
    assert "Palveluntuottaja valittu." in await page.inner_text("main")
    assert await page.inner_text("#chosen") == "Hoivapalvelu Bee Oy"

    # feedback: 4 of 5, with words
    await page.check("input[name=rating][value='4']")
    await page.fill("#text", "Ystävällinen ja täsmällinen hoitaja.")
    await page.click("form[action='/client/feedback'] button[type=submit]")
    assert "Kiitos palautteestasi." in await page.inner_text("main")
    await screenshot(page, "04-client-chosen-feedback")

    # the choice reached the vouchers service, the feedback the funder's staff
    from .conftest import bearer
    r = await system.client("vouchers", headers=bearer("funder_decision_maker", funder_id=FUNDER)).get(
        f"/vouchers/{world.vouchers['v1']['id']}")
    assert r.json()["provider_id"] == world.providers["B"]
    r = await system.client("reporting", headers=bearer("funder_reporting", funder_id=FUNDER)).get(
        f"/funders/{FUNDER}/feedback")
    assert r.status_code == 200, r.text
    assert [(f["rating"], f["text"]) for f in r.json()["items"]] == [(4, "Ystävällinen ja täsmällinen hoitaja.")]


async def test_provider_charges_by_code_and_uploads_a_csv(portal, world: World, browser, tmp_path):  # noqa: ANN001
    page = await browser.new_page()
    await page.goto(f"{portal}/signin")
    await page.select_option("#role", "provider_charger")
    await page.fill("#provider_id", world.providers["B"])
    await page.click("#staff form button[type=submit]")
    await page.wait_for_url(f"{portal}/provider")
    await page.click("header nav >> text=Veloita seteliä")
    code = world.vouchers["v2"]["voucher_code"]
    today = date.today().isoformat()
    await page.fill("#voucher_code", code)
    await page.fill("#provider_reference", "visit-browser-1")
    await page.fill("#service_date", today)
    await page.fill("#units", "2")
    await page.click("form[action='/provider/charge'] button[type=submit]")
    done = await page.inner_text("[role=status]")
    # 2 h x 27.00 EUR: the voucher pays 2 x 25.00, the client 2 x 2.00
    assert "Veloitus hyväksytty" in done and "50,00" in done and "4,00" in done, done
    await screenshot(page, "05-provider-charge")

    # the month's CSV as a Finnish spreadsheet writes it: semicolons, decimal commas, d.m.yyyy dates, and a
    # free-text column of the provider's own (ignored, with one warning)
    d = date.today()
    csv = (f"voucher_code;provider_reference;service_date;units;Lisätieto\n"
           f"{code};csv-1;{d.day}.{d.month}.{d.year};1,5;aamu\n"
           f"{code};csv-2;{d.isoformat()};1;\n"
           f"NOSUCHCODE;csv-3;{d.isoformat()};1;\n"
           f"{code};csv-4;{d.isoformat()};99;ilta\n")
    file = tmp_path / "kuukausi.csv"
    file.write_text(csv, encoding="utf-8")
    await page.set_input_files("#file", str(file))
    await page.click("form[action='/provider/charges/upload'] button[type=submit]")
    summary = await page.inner_text("#bulk-summary")
    assert summary == "Rivejä 4: hyväksytty 2, jo veloitettu 0, hylätty 2", summary
    warning = await page.inner_text("#bulk-warning-columns")
    assert "jätettiin huomiotta: “Lisätieto”" in warning and "csv_unknown_columns_ignored" in warning, warning
    lines = page.locator("#bulk-lines tbody tr")
    assert await lines.count() == 4
    texts = [await lines.nth(i).inner_text() for i in range(4)]
    assert "hyväksytty" in texts[0] and "hyväksytty" in texts[1]
    assert "hylätty" in texts[2] and "hylätty" in texts[3] and "units_exceeded" in texts[3]
    await screenshot(page, "06-provider-csv-result")
    await page.click("main >> text=Veloitukset")
    listed = await page.inner_text("#charges")
    for ref in ("visit-browser-1", "csv-1", "csv-2"):
        assert ref in listed
    assert "csv-3" not in listed
    await screenshot(page, "07-provider-charges")


async def test_funder_opens_the_report_and_sees_the_chart(portal, world: World, browser, system):  # noqa: ANN001
    from .conftest import bearer

    reporting = system.client("reporting", headers=bearer("funder_reporting", funder_id=FUNDER))

    async def charged():  # noqa: ANN202  (reporting has folded the charges of the world)
        r = await reporting.get(f"/funders/{FUNDER}/figures")
        return r.status_code == 200 and r.json()["charges_accepted"] >= 1

    await eventually(charged)
    page = await browser.new_page()
    await page.goto(f"{portal}/signin?lang=en")
    await page.select_option("#role", "funder_reporting")
    await page.fill("#funder_id", FUNDER)
    await page.click("#staff form button[type=submit]")
    await page.wait_for_url(f"{portal}/funder")
    await page.click("header nav >> text=Monitoring report")
    assert await page.get_attribute("html", "lang") == "en"
    assert await page.locator("#report-missing").count() == 0, await page.inner_text("main")
    table = await page.inner_text("#report-table")
    assert "Home care" in table or "home" in table.lower(), table
    chart = page.locator("#chart-volume")
    await chart.scroll_into_view_if_needed()
    loaded = await page.wait_for_function(
        "() => ['#chart-volume', '#chart-price'].every(s => { const i = document.querySelector(s);"
        " return i.complete && i.naturalWidth > 0 })")
    assert loaded
    r = await page.request.get(f"{portal}/funder/charts/price-development.svg?category=home_care")
    assert r.status == 200 and r.headers["content-type"].startswith("image/svg+xml"), r.status
    assert b"<svg" in await r.body()
    await screenshot(page, "08-funder-report")


async def test_a_provider_applies_and_the_funder_approves_in_the_portal(portal, world: World, system):  # noqa: ANN001
    from .conftest import CSRF, OPERATOR

    c_id = world.providers["C"]
    async with signed_in(portal, "provider_manager", provider_id=c_id) as provider, \
            signed_in(portal, "funder_provider_approver", funder_id=FUNDER) as funder:
        form = (await provider.get("/provider/apply")).text
        r = await provider.post("/provider/apply", data={"csrf": CSRF.search(form).group(1), "funder_id": FUNDER,
                                                         "category": "home_care"})
        assert r.status_code == 422, "the rulebook must be accepted"
        r = await provider.post("/provider/apply", data={"csrf": CSRF.search(form).group(1), "funder_id": FUNDER,
                                                         "category": "home_care", "accept": "yes"})
        assert r.status_code == 200 and "Hakemus lähetetty." in r.text and "2026.1" in r.text, r.text.split("<main")[1][:700]
        listing = (await funder.get("/funder/applications")).text
        c_entry = (await system.client("registry", headers=OPERATOR).get(f"/providers/{c_id}")).json()
        # the applicant by its name and business ID, not a UUID
        assert "Uusi Hoiva Oy" in listing and c_entry["business_id"] in listing and c_id not in listing.split("<main")[1]
        application = (await system.client("registry", headers=OPERATOR).get(
            "/applications", params={"provider_id": c_id})).json()["items"][0]
        r = await funder.post(f"/funder/applications/{application['id']}/approve",
                              data={"csrf": CSRF.search(listing).group(1)})
        assert r.status_code == 200 and "Ratkaistu." in r.text
        assert "Uusi Hoiva Oy" not in r.text.split("</h1>", 1)[1]  # no longer waiting for a decision
        entry = (await system.client("registry", headers=OPERATOR).get(f"/providers/{c_id}")).json()
        assert [(a["funder_id"], a["category"], a["status"]) for a in entry["approvals"]] == [
            (FUNDER, "home_care", "active")]


async def test_the_operator_runs_a_settlement_and_checks_the_ledger(portal, world: World, system, amqp_url):  # noqa: ANN001
    import re

    import aio_pika

    from .conftest import CSRF, OPERATOR

    # a message lands in reporting's dead-letter queue: the operator sees it counted
    dlq = f"{system.namespace}.reporting.dlq"
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=dlq)
    async with signed_in(portal, "operator") as op:
        page = (await op.get("/operator")).text
        assert "Kirjanpito täsmää." in page
        counted = dict(re.findall(r"<td>([^<]+\.dlq)</td><td class=\"num\"[^>]*>(\d+)</td>", page))
        assert counted.get(dlq) == "1", counted
        r = await op.post("/operator/settlements/run", data={"csrf": CSRF.search(page).group(1)})
        assert r.status_code == 200 and "Tilitys ajettu:" in r.text
        assert "Kirjanpito täsmää." in r.text
        assert "Takaisinperinnät" in r.text
        # each run that pays something: its pain.001 file, and a form to record the bank's execution of it
        runs = (await system.client("payments", headers=OPERATOR).get("/settlement-runs")).json()["items"]
        paying = [x for x in runs if x["net_cents"] > 0 and x["executed_on"] is None]
        assert paying, runs  # the world's charge was paid by this run or an earlier one; nothing executed it
        for run in paying:
            assert f'/operator/settlement-runs/{run["id"]}/execution' in r.text
            xml = await op.get(f'/operator/settlement-runs/{run["id"]}/payment-file')
            assert xml.status_code == 200 and b"CstmrCdtTrfInitn" in xml.content
            bad = await op.post(f'/operator/settlement-runs/{run["id"]}/execution',
                                data={"csrf": CSRF.search(r.text).group(1), "executed_on": "eilen"})
            assert "p.k.vvvv" in bad.text
            done = await op.post(f'/operator/settlement-runs/{run["id"]}/execution',
                                 data={"csrf": CSRF.search(r.text).group(1), "executed_on": run["run_date"]})
            assert done.status_code == 200 and "kirjattu maksetuksi" in done.text, done.text[-2000:]
            assert "Kirjanpito täsmää." in done.text
        executed = (await system.client("payments", headers=OPERATOR).get("/settlement-runs")).json()["items"]
        assert all(x["executed_on"] for x in executed if x["id"] in {p["id"] for p in paying})
        refused = await op.post("/operator/settlement-runs/../execution",
                                data={"csrf": CSRF.search(r.text).group(1), "executed_on": "2026-01-01"})
        assert refused.status_code in (404, 405)


async def test_every_field_has_a_label_and_pages_fit_a_phone(portal, world: World, browser):  # noqa: ANN001
    """Accessibility basics on the main pages: the language is declared, every visible field has a label
    (a <label for>, a wrapping label or aria-label), headings start at h1, nothing is wider than a phone."""
    page = await browser.new_page()
    await page.set_viewport_size({"width": 375, "height": 740})
    await page.goto(f"{portal}/signin")
    await page.select_option("#role", "provider_charger")
    await page.fill("#provider_id", world.providers["B"])
    await page.click("#staff form button[type=submit]")
    unlabelled_js = """() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden')
        .filter(e => !(e.id && document.querySelector(`label[for="${e.id}"]`)) && !e.closest('label')
                     && !e.getAttribute('aria-label'))
        .map(e => e.name || e.id)"""
    for path in ("/", "/compare?funder=091&category=home_care", "/signin", "/provider", "/provider/charge",
                 "/provider/apply", "/provider/charges"):
        await page.goto(f"{portal}{path}")
        assert await page.get_attribute("html", "lang") == "fi", path
        assert await page.evaluate(unlabelled_js) == [], path
        assert await page.locator("h1").count() == 1, path
        overflow = await page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
    await page.goto(f"{portal}/compare?funder=091&category=home_care")
    await screenshot(page, "09-compare-phone")
    # the keyboard reaches the skip link first, and it leads to the content
    await page.keyboard.press("Tab")
    assert await page.evaluate("() => document.activeElement.className") == "skip"


async def test_a_personal_identity_code_in_feedback_is_refused_and_never_logged(portal, world: World, system):  # noqa: ANN001
    from .conftest import CSRF

    hetu = "131052-308T"
    async with client_signed_in(portal, world.vouchers["v3"]) as c:
        csrf = CSRF.search((await c.get("/client")).text).group(1)
        r = await c.post("/client/feedback", data={"csrf": csrf, "rating": "2", "text": f"Hoitaja kysyi {hetu}"})
        assert r.status_code == 422 and "Älä kirjoita henkilötunnusta." in r.text  # refused by the portal itself
        assert hetu not in r.text
    assert hetu not in system.log_text()


# ------------------------------------------------------------------ a token the services no longer accept
async def test_a_token_the_services_no_longer_accept_ends_the_session(system, world: World, tmp_path):  # noqa: ANN001
    """A portal whose signing key the services do not trust (as after a key is withdrawn): it signs a
    user in, the services refuse the token (401) and the portal ends the session and sends the user to
    sign in again, whichever way it called (one answer, a paged list, a file), instead of showing an
    error inside a session that can no longer do anything."""
    from contextlib import AsyncExitStack

    from portal.app import create_app
    from portal.settings import PortalSettings

    from .conftest import CSRF

    settings = PortalSettings(environment="test", dev_signing_secret="a-key-the-services-do-not-trust-0123456789",
                              database_url=f"sqlite+aiosqlite:///{tmp_path / 'portal.db'}",
                              **{f"{name}_url": url for name, url in system.urls.items()})
    app = create_app(settings)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        c = await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://portal", follow_redirects=False))
        for page in ("/funder", "/funder/vouchers", "/funder/report.csv"):
            csrf = CSRF.search((await c.get("/signin")).text).group(1)
            r = await c.post("/signin/dev", data={"csrf": csrf, "role": "funder_decision_maker", "funder_id": FUNDER})
            assert (r.status_code, r.headers["location"]) == (303, "/funder"), r.text
            r = await c.get(page)
            assert (r.status_code, r.headers["location"]) == (303, f"/signin?next={page}"), page
            # the session is over: the next page is a stranger's, and the sign-in form is offered
            r = await c.get("/funder/audit")
            assert (r.status_code, r.headers["location"]) == (303, "/signin?next=/funder/audit"), page
            assert "/signin/dev" in (await c.get("/signin")).text
        # a form sent with the refused token: a page saying the session has expired, and no session after it
        csrf = CSRF.search((await c.get("/signin")).text).group(1)
        r = await c.post("/signin/dev", data={"csrf": csrf, "role": "operator"})
        assert r.status_code == 303
        csrf = CSRF.search((await c.get("/signin")).text).group(1)
        r = await c.post("/operator/settlements/run", data={"csrf": csrf})
        assert r.status_code == 401 and "Istunto on vanhentunut" in r.text, r.text
        assert (await c.get("/operator")).status_code == 303
