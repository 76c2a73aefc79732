"""The portal on its own (no services needed): its words in three languages, the language choice,
money as a person reads it, the session cookie and CSRF, production settings, no open redirect, and
the OpenID Connect sign-in against a small issuer run by the test (authorization code with PKCE, state
and nonce; the access token verified against the issuer's JWKS as the services verify it)."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.testclient import TestClient

from portal import i18n
from portal.app import create_app
from portal.settings import PortalSettings
from portal.signin import _safe_next
from portal.web import eur

TEMPLATES = Path(__file__).resolve().parents[1] / "src" / "portal" / "templates"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def test_every_word_the_pages_use_is_there_in_finnish_swedish_and_english():
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""t\(\s*["']([a-z_]*[a-z])["']""", template.read_text(encoding="utf-8")))
    for module in (Path(i18n.__file__).parent).glob("*.py"):
        used |= set(re.findall(r"""\.t\(\s*["']([a-z_]*[a-z])["']""", module.read_text(encoding="utf-8")))
    missing = sorted(k for k in used if k not in i18n.TEXTS)
    assert not missing, missing
    for key, texts in i18n.TEXTS.items():
        assert len(texts) == 3 and all(t.strip() for t in texts), key


def test_language_from_the_query_then_the_cookie_then_the_browser_else_finnish():
    assert i18n.pick("sv", "en", "en-GB") == "sv"
    assert i18n.pick(None, "en", "sv-FI") == "en"
    assert i18n.pick("xx", None, "de-DE,sv;q=0.8") == "sv"
    assert i18n.pick(None, None, None) == "fi"


def test_money_is_shown_the_finnish_way():
    assert eur(123456) == "1\u00a0234,56\u00a0€"
    assert eur(-5) == "-0,05\u00a0€"
    assert eur(None) == "–"


def test_only_paths_of_this_site_are_followed_after_sign_in():
    assert _safe_next("/funder/report") == "/funder/report"
    for bad in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", None):
        assert _safe_next(bad) is None


def test_pages_set_lang_and_the_language_cookie():
    with TestClient(create_app(PortalSettings(environment="test"))) as c:
        r = c.get("/?lang=sv")
        assert '<html lang="sv">' in r.text and "Servicesedel" in r.text
        assert "lang=sv" in r.headers["set-cookie"]
        assert '<html lang="sv">' in c.get("/compare").text  # remembered
        assert '<html lang="en">' in c.get("/", headers={"accept-language": "en"}, cookies={"lang": ""}).text


def test_unknown_pages_are_a_404_page_and_the_security_headers_are_set():
    with TestClient(create_app(PortalSettings(environment="test"))) as c:
        r = c.get("/no/such/page")
        assert r.status_code == 404 and "Sivua ei löytynyt." in r.text
        assert r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_development_sign_in_mints_a_token_for_the_chosen_role_and_a_form_needs_the_csrf_token():
    with TestClient(create_app(PortalSettings(environment="test")), follow_redirects=False) as c:
        csrf = CSRF.search(c.get("/signin").text).group(1)
        assert c.post("/signin/dev", data={"role": "operator", "csrf": "x"}).status_code == 403
        r = c.post("/signin/dev", data={"role": "provider_charger", "provider_id": "p-1", "csrf": csrf})
        assert (r.status_code, r.headers["location"]) == (303, "/provider")
        assert c.get("/funder").status_code == 403
        assert c.get("/operator").status_code == 403
        # a funder role without its funder is no token at all
        csrf = CSRF.search(c.get("/signin").text).group(1)
        r = c.post("/signin/dev", data={"role": "funder_finance", "funder_id": "", "csrf": csrf})
        assert r.status_code == 401


PRODUCTION = dict(environment="production", portal_session_secret="s" * 40, jwks_url="/nonexistent")


def test_production_refuses_the_development_session_secret_and_has_no_development_sign_in(tmp_path):
    with pytest.raises(ValueError, match="PORTAL_SESSION_SECRET"):
        PortalSettings(environment="production", jwks_url="x")
    with pytest.raises(ValueError, match="JWKS_URL"):
        PortalSettings(environment="production", portal_session_secret="s" * 40)
    keys = tmp_path / "jwks.json"
    public = jwt.algorithms.RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048)
                                                .public_key(), as_dict=True)
    keys.write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    settings = PortalSettings(**{**PRODUCTION, "jwks_url": str(keys)})
    assert settings.secure_cookies and not settings.dev_sign_in
    with TestClient(create_app(settings), base_url="https://portal.example") as c:
        page = c.get("/signin")
        assert "/signin/dev" not in page.text
        csrf = CSRF.search(page.text).group(1)
        assert c.post("/signin/dev", data={"role": "operator", "csrf": csrf}).status_code == 404
        assert "secure" in page.headers["set-cookie"].lower()


# ------------------------------------------------------------------ OpenID Connect against an issuer of the test
class Issuer:
    """A small OpenID Connect provider: discovery, authorize (a signed-in user is assumed), token with
    PKCE checked, RS256 tokens whose public key is in a JWKS file."""

    def __init__(self, jwks_path: Path, claims: dict):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwks = {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}
        jwks_path.write_text(json.dumps(self.jwks))
        self.claims, self.codes = claims, {}
        #: how the next ID tokens are made: claims changed, another signing key or algorithm, or none at all
        self.id_claims: dict = {}
        self.id_key, self.id_alg, self.id_token = None, "RS256", True
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        def discovery() -> dict:
            return {"issuer": self.url, "authorization_endpoint": f"{self.url}/authorize",
                    "token_endpoint": f"{self.url}/token", "jwks_uri": f"{self.url}/jwks"}

        @app.get("/jwks")
        def jwks() -> dict:
            return self.jwks

        @app.get("/authorize")
        def authorize(request: Request) -> RedirectResponse:
            q = request.query_params
            assert q["response_type"] == "code" and q["code_challenge_method"] == "S256"
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"challenge": q["code_challenge"], "nonce": q["nonce"],
                                "redirect_uri": q["redirect_uri"], "client_id": q["client_id"]}
            return RedirectResponse(f"{q['redirect_uri']}?code={code}&state={q['state']}", status_code=302)

        @app.post("/token")
        def token(code: str = Form(), code_verifier: str = Form(), redirect_uri: str = Form(),
                  grant_type: str = Form(), client_id: str = Form()) -> JSONResponse:
            pending = self.codes.pop(code, None)
            digest = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
            if not pending or digest != pending["challenge"] or redirect_uri != pending["redirect_uri"]:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            now = int(time.time())
            base = {"iss": self.url, "iat": now, "exp": now + 600, "sub": "staff-42"}
            access = jwt.encode({**base, "aud": "seteli", **self.claims}, self.key, algorithm="RS256",
                                headers={"kid": "k1"})
            id_claims = {**base, "aud": client_id, "nonce": pending["nonce"], **self.id_claims}
            id_token = jwt.encode({k: v for k, v in id_claims.items() if v is not None},  # None: left out
                                  self.id_key or self.key, algorithm=self.id_alg, headers={"kid": "k1"})
            return JSONResponse({"access_token": access, "token_type": "Bearer",
                                 **({"id_token": id_token} if self.id_token else {})})

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Issuer":
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def _oidc_portal(issuer: Issuer, jwks: Path) -> TestClient:
    settings = PortalSettings(**{**PRODUCTION, "jwks_url": str(jwks)}, jwt_issuer=issuer.url, oidc_issuer=issuer.url,
                              oidc_client_id="portal", portal_url="https://portal.example")
    return TestClient(create_app(settings), base_url="https://portal.example", follow_redirects=False)


def test_staff_sign_in_with_openid_connect(tmp_path):
    jwks = tmp_path / "jwks.json"
    with Issuer(jwks, {"roles": ["funder_reporting"], "funder_id": "091"}) as issuer, \
            _oidc_portal(issuer, jwks) as c:
        assert "/signin/oidc" in c.get("/signin").text
        r = c.get("/signin/oidc?next=/funder/report")
        assert r.status_code == 303 and r.headers["location"].startswith(f"{issuer.url}/authorize?")
        query = parse_qs(urlparse(r.headers["location"]).query)
        assert query["redirect_uri"] == ["https://portal.example/signin/oidc/callback"]
        # the browser goes to the issuer, which sends it back with a code
        import httpx
        back = httpx.get(r.headers["location"], follow_redirects=False)
        callback = urlparse(back.headers["location"])
        r = c.get(f"{callback.path}?{callback.query}")
        assert (r.status_code, r.headers["location"]) == (303, "/funder/report"), r.text
        page = c.get("/funder")  # the services are not running: the page says so, but it is the funder's page
        assert page.status_code == 200 and "Kirjautuneena: raportointi (091)" in page.text
        assert c.get("/operator").status_code == 403


def test_openid_connect_callback_refuses_a_foreign_state_and_a_token_of_another_issuer(tmp_path):
    jwks = tmp_path / "jwks.json"
    with Issuer(jwks, {"roles": ["operator"]}) as issuer, _oidc_portal(issuer, jwks) as c:
        c.get("/signin/oidc")
        assert c.get("/signin/oidc/callback?code=x&state=not-ours").status_code == 403
        # a code is used once, and the state once: replaying the callback is refused
        import httpx
        r = c.get("/signin/oidc")
        back = urlparse(httpx.get(r.headers["location"], follow_redirects=False).headers["location"])
        assert c.get(f"{back.path}?{back.query}").status_code == 303
        assert c.get(f"{back.path}?{back.query}").status_code == 403
    other = tmp_path / "other.json"
    with Issuer(other, {"roles": ["operator"]}) as issuer:
        settings = PortalSettings(**{**PRODUCTION, "jwks_url": str(jwks)}, jwt_issuer=issuer.url,
                                  oidc_issuer=issuer.url, oidc_client_id="portal", portal_url="https://portal.example")
        with TestClient(create_app(settings), base_url="https://portal.example", follow_redirects=False) as c:
            r = c.get("/signin/oidc")
            back = urlparse(httpx.get(r.headers["location"], follow_redirects=False).headers["location"])
            r = c.get(f"{back.path}?{back.query}")
            assert r.status_code == 401  # signed by a key the platform does not trust
            assert c.get("/operator").status_code == 303


def _sign_in_through(c: TestClient) -> "httpx.Response":
    """The browser's round trip: the portal sends it to the issuer, the issuer back with a code."""
    import httpx
    r = c.get("/signin/oidc")
    back = urlparse(httpx.get(r.headers["location"], follow_redirects=False).headers["location"])
    return c.get(f"{back.path}?{back.query}")


def test_openid_connect_refuses_an_id_token_that_is_forged_wrongly_signed_or_not_for_this_sign_in(tmp_path):
    """The access token stays valid throughout: only the ID token is wrong, and no session starts."""
    jwks = tmp_path / "jwks.json"
    now = int(time.time())
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with Issuer(jwks, {"roles": ["operator"]}) as issuer, _oidc_portal(issuer, jwks) as c:
        forgeries = {
            "signed by another key under the issuer's kid": dict(id_key=stranger),
            "HS256 with a guessed secret": dict(id_key="secret-anyone-could-guess-000000", id_alg="HS256"),
            "for another client": dict(id_claims={"aud": "another-client"}),
            "from another issuer": dict(id_claims={"iss": "https://evil.example"}),
            "expired": dict(id_claims={"iat": now - 7200, "exp": now - 3600}),
            "for another sign-in (nonce)": dict(id_claims={"nonce": "not-this-browsers"}),
            "without a nonce": dict(id_claims={"nonce": None}),
            "missing": dict(id_token=False),
        }
        for what, forgery in forgeries.items():
            issuer.id_key, issuer.id_alg, issuer.id_claims, issuer.id_token = None, "RS256", {}, True
            for name, value in forgery.items():
                setattr(issuer, name, value)
            r = _sign_in_through(c)
            assert r.status_code == 401, what
            assert c.get("/operator").status_code == 303, f"{what}: a session started"
        # the same issuer with an honest ID token: signed in
        issuer.id_key, issuer.id_alg, issuer.id_claims, issuer.id_token = None, "RS256", {}, True
        assert _sign_in_through(c).status_code == 303
        assert c.get("/operator").status_code == 200


def test_numbers_typed_in_forms_are_ascii_digits_only():
    from portal.web import small_int
    assert small_int("20") == 20
    # ``isdigit`` admits these, ``int`` refuses them: they must be a refusal, never a 500
    assert small_int("²") is None and small_int("1" * 5000) is None and small_int("") is None
    assert small_int("٣") is None and small_int("-1") is None


def test_the_client_sign_in_passes_the_browsers_address_and_only_its_own_proxies_name_another():
    """The vouchers service slows wrong login codes per browser address, which only the portal knows: it
    sends the browser's address (its TCP peer, or what a proxy of its own TRUSTED_PROXIES says) in
    X-Forwarded-For; a browser cannot pass on a header it wrote itself. A 429 keeps its Retry-After."""
    import httpx

    seen, answer = [], {}

    def vouchers(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("x-forwarded-for"))
        return httpx.Response(answer["status"], json={"error": {"reason": answer["reason"], "message": "",
                                                                 "details": answer.get("details", {})}})

    cases = (("", "203.0.113.9", "198.51.100.1", "203.0.113.9"),              # no proxies: the peer
             ("203.0.113.0/24", "203.0.113.9", "198.51.100.1", "198.51.100.1"),  # the portal's own proxy
             ("203.0.113.0/24", "192.0.2.1", "198.51.100.1", "192.0.2.1"))       # a stranger claiming one
    for proxies, peer, forwarded, expected in cases:
        answer.update(status=401, reason="invalid_voucher_credentials")
        app = create_app(PortalSettings(environment="test", trusted_proxies=proxies),
                         transport=httpx.MockTransport(vouchers))
        with TestClient(app, client=(peer, 50000)) as c:
            csrf = CSRF.search(c.get("/signin").text).group(1)
            form = {"csrf": csrf, "voucher_code": "7KQ2M9XH4D=", "client_login_code": "0000000000000"}
            r = c.post("/signin/client", data=form, headers={"X-Forwarded-For": forwarded})
            assert r.status_code == 401 and "Koodit eivät täsmää." in r.text
            assert seen[-1] == expected, (proxies, peer)
            answer.update(status=429, reason="too_many_attempts", details={"retry_after_seconds": 8})
            r = c.post("/signin/client", data=form)
            assert (r.status_code, r.headers["retry-after"]) == (429, "8")


# ---------------------------------------------------------------- personal identity codes
CODE_SPELLINGS = ["131052-308T", "131052 308T", "131052\u00a0308T", "x131052-308Ty", "131052308T", "010101a123n"]


def test_a_personal_identity_code_typed_into_a_form_or_an_address_is_refused_never_shown_sent_or_logged(
        capsys):  # noqa: ANN001
    """A 422 page that says not to write one, before any service is called, the code neither in the page
    (no re-filled form, no ``next`` address) nor in the portal's log."""
    import httpx

    from seteli_shared.logging import configure_logging

    calls: list[httpx.Request] = []

    def services(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(422, json={"error": {"reason": "personal_identity_code", "message": "refused"}})

    configure_logging("portal")
    app = create_app(PortalSettings(environment="test"), transport=httpx.MockTransport(services))
    with TestClient(app, follow_redirects=False) as c:
        csrf = CSRF.search(c.get("/signin").text).group(1)
        assert c.post("/signin/dev", data={"role": "provider_charger", "provider_id": "p-1", "csrf": csrf}
                      ).status_code == 303
        csrf = CSRF.search(c.get("/provider/charge").text).group(1)
        capsys.readouterr()
        for code in CODE_SPELLINGS:
            pages = [
                c.post("/provider/charge", data={"csrf": csrf, "voucher_code": "7KQ2M9XH4D=",
                                                 "provider_reference": code, "service_date": "2026-06-01",
                                                 "units": "1"}),
                c.get(f"/compare/providers/{code}"),
                c.get("/compare", params={"funder": "091", "municipality": code}),
                c.get("/signin", params={"next": f"/provider/{code}"}),
            ]
            for r in pages:
                assert r.status_code == 422, r.text
                assert "Älä kirjoita henkilötunnusta." in r.text
                assert code not in r.text and "131052" not in r.text and "010101" not in r.text
    assert calls == [], "nothing was sent on to a service"
    out = capsys.readouterr().out
    assert '"path": "[not logged]"' in out and "131052" not in out and "010101" not in out


# ------------------------------------------------------------------ issue 23: Finnish users
SERVICES = Path(__file__).resolve().parents[2]
#: the refusals a service makes (``DomainError("...")``, ``Conflict("...")``, a bulk line's ``reason=``)
REFUSAL = re.compile(r"""(?:DomainError|Conflict|Refused|_refuse|reason=)\(?\s*["']([a-z][a-z0-9_]+)["']""")
#: refusals no person meets through the portal (machine-to-machine, operator tools, bus contracts)
MACHINES_ONLY = {"contract_violation", "decision_conflict", "funder_mismatch", "stale_version", "unknown_decision",
                 "unknown_type", "idempotency_key_reused", "invalid_idempotency_key", "request_in_flight",
                 "rebuild_running", "filter_not_allowed", "forbidden_tenant", "funder_id_required",
                 "provider_id_required", "invalid_cursor", "malformed_json", "unsupported_media_type", "url_too_long",
                 "client_login_unavailable", "webhook_address_not_public", "webhook_address_unresolvable",
                 "webhook_not_https", "webhook_url_invalid", "payee_account_unknown", "invalid_household_size",
                 "invalid_income", "invalid_value_table", "unknown_value_table", "value_table_version_exists",
                 "voucher_value_required", "invalid_month", "invalid_period", "repayment_exceeds_claim",
                 "rulebook_version_exists", "rulebook_version_for_other_category", "funder_exists",
                 "provider_exists", "bic_does_not_match_iban", "prepayment_checked_on_in_future",
                 "feedback_in_flight", "too_many_lines", "invalid_validity",
                 "signed_out"}  # (a log line's reason, not a refusal)


def test_every_refusal_a_person_can_meet_is_a_sentence_in_three_languages():
    found = set()
    for source in SERVICES.glob("*/src/**/*.py"):
        found |= set(REFUSAL.findall(source.read_text(encoding="utf-8")))
    assert len(found) > 40, "the services' refusals were found"
    missing = sorted(r for r in found - MACHINES_ONLY if f"reason_{r}" not in i18n.TEXTS)
    assert not missing, missing
    t = i18n.translator("sv")
    assert t.reason("grounds_required").startswith("Beslutet behöver") and t.role("funder_reporting") == "rapportering"
    assert t.language("fi") == "finska" and i18n.translator("fi").action("application.reject") == "hakemus: hylätty"


def test_the_language_links_keep_the_pages_query_and_words_not_codes():
    with TestClient(create_app(PortalSettings(environment="test"))) as c:
        page = c.get("/compare?funder=091&category=home_care&municipality=091&sort=own_share").text
        link = re.search(r'href="([^"]+)" lang="sv"', page).group(1).replace("&amp;", "&")
        assert link == "/compare?funder=091&category=home_care&municipality=091&sort=own_share&lang=sv"
        assert ">Helsinki</option>" in page and "Kunta (koodi)" not in page
        assert ">Helsingfors</option>" in c.get(link).text


def test_dates_numbers_and_euros_are_written_the_finnish_way():
    from portal.formats import Formats, typed_date

    fi, sv = Formats("fi"), Formats("sv")
    assert (fi.date("2026-10-27"), fi.number("20.00"), fi.number("1.50"), fi.eur(48012512)) == (
        "27.10.2026", "20", "1,5", "480\u00a0125,12\u00a0€")
    assert fi.datetime("2026-10-27T10:05:00+00:00") == "27.10.2026 12.05"  # Finland's time, winter
    assert (fi.month("2026-11"), sv.month("2026-11"), sv.share("0.8823")) == ("marraskuu 2026", "november 2026",
                                                                              "88\u00a0%")
    assert typed_date("7.10.2026").isoformat() == "2026-10-07" and typed_date("7.10.26") is None


def test_a_csv_with_finnish_or_swedish_headings_reaches_payments_with_its_names():
    from portal.provider import system_header

    fi = "\ufeffsetelin_koodi;oma_viite;palvelupäivä;yksiköt;lisätieto\r\nABC;v-1;7.10.2026;1,5;x\r\n".encode()
    assert system_header(fi).decode("utf-8") == \
        "\ufeffvoucher_code;provider_reference;service_date;units;lisätieto\r\nABC;v-1;7.10.2026;1,5;x\r\n"
    sv = b"sedelns_kod,egen_referens,servicedag,enheter\nABC,v-1,2026-10-07,1\n"
    assert system_header(sv).startswith(b"voucher_code,provider_reference,service_date,units\n")


def test_metrics_count_pages_by_their_route_template_without_what_was_typed():
    """``/metrics``: the pages counted by route template and status, never the path or query a person typed."""
    with TestClient(create_app(PortalSettings(environment="test"))) as c:
        assert c.get("/?lang=fi").status_code == 200
        assert c.get("/no/such/page/131052-308T").status_code in (404, 422)
        assert c.get("/compare?q=Matti+Meikäläinen").status_code == 200
        r = c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        lines = [line for line in r.text.splitlines() if line.startswith("seteli_http_requests_total")]
        assert 'seteli_http_requests_total{method="GET",route="/",status="200"} 1.0' in lines
        assert any('route="/compare"' in line for line in lines)
        assert any('route="(unmatched)"' in line for line in lines), lines
        assert "131052" not in r.text and "Matti" not in r.text and "no/such" not in r.text
