"""Signing in and out.

- Clients: the voucher code and the client login code of the decision letter, checked by the vouchers
  service's light login (``POST /client-sessions``, the browser's address in ``X-Forwarded-For``), whose
  token the portal keeps in the session on the server.
- Staff and providers in development: a page where a developer picks a role and its funder or
  provider, and the portal mints a development token (``seteli_shared.auth.mint``, the same as
  ``seteli-token``). Only when ENVIRONMENT is development or test; production settings turn it off.
- Staff and providers in production: OpenID Connect authorization-code flow with PKCE against
  ``OIDC_ISSUER`` (discovery at ``/.well-known/openid-configuration``). The ID token is verified before
  anything else: its signature against the issuer's own JWKS (the discovery's ``jwks_uri``; an
  asymmetric algorithm only), ``iss`` = ``OIDC_ISSUER``, ``aud`` = ``OIDC_CLIENT_ID``, ``exp`` and the
  ``nonce`` this browser's request sent; an answer without a valid ID token starts no session. The
  access token the issuer returns is the platform's bearer token (the services verify it against
  ``JWKS_URL``), so the portal verifies it the same way before it starts a session.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import time
from urllib.parse import urlencode

import httpx
import jwt
from fastapi import APIRouter, Request
from fastapi.responses import Response

from seteli_shared.addresses import FORWARDED_FOR
from seteli_shared.auth import FUNDER_ROLES, PROVIDER_ROLES, InvalidToken, Role, mint
from seteli_shared.auth.tokens import ASYMMETRIC

from .backend import BackendError
from .web import Page, PageRefusal, user_from_principal

router = APIRouter()
STAFF_ROLES = [r.value for r in Role if r is not Role.CLIENT]


def _safe_next(target: str | None) -> str | None:
    """Only a path of this site (no scheme, no host): never an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


def _start(page: Page, token: str, next_path: str | None = None) -> Response:
    try:
        principal = page.verifier.verify(token)
        exp = float(jwt.decode(token, options={"verify_signature": False}).get("exp", 0))
    except (InvalidToken, jwt.PyJWTError) as exc:
        return page.render("signin.html", status=401, roles=STAFF_ROLES, error=str(exc))
    user = user_from_principal(token, principal, exp)
    page.sign_in(user)
    return page.redirect(_safe_next(next_path) or user.area)


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    page = Page(request)
    return page.render("signin.html", roles=STAFF_ROLES, next=_safe_next(request.query_params.get("next")) or "")


@router.post("/signin/client")
async def client_signin(request: Request) -> Response:
    page = Page(request)
    form = await page.check_csrf()
    code, login = str(form.get("voucher_code", "")).strip(), str(form.get("client_login_code", "")).strip()
    try:
        # the vouchers service slows wrong codes per browser address: it believes this header from the
        # portal (its TRUSTED_PROXIES), so one browser's failures never slow another's login
        answer = await page.backend.json("vouchers", "POST", "/client-sessions",
                                         headers={FORWARDED_FOR: page.client_address},
                                         json={"voucher_code": code, "client_login_code": login})
    except BackendError as err:
        key = {429: "too_many_attempts"}.get(err.status, "login_failed" if err.status in (401, 404, 422)
                                                                     else "service_unavailable")
        response = page.render("signin.html", status=err.status if err.status < 500 else 503, roles=STAFF_ROLES,
                               client_error=page.t(key))
        wait = err.details.get("retry_after_seconds")
        if err.status == 429 and isinstance(wait, int):
            response.headers["Retry-After"] = str(wait)
        return response
    return _start(page, answer["access_token"], "/client")


@router.post("/signin/dev")
async def dev_signin(request: Request) -> Response:
    page = Page(request)
    if not page.settings.dev_sign_in:
        raise PageRefusal(404, "page_not_found")
    form = await page.check_csrf()
    role = str(form.get("role", ""))
    if role not in STAFF_ROLES:
        return page.render("signin.html", status=422, roles=STAFF_ROLES, error=page.t("role"))
    claims: dict[str, str] = {}
    if Role(role) in FUNDER_ROLES:
        claims["funder_id"] = str(form.get("funder_id", "")).strip()
    if Role(role) in PROVIDER_ROLES:
        claims["provider_id"] = str(form.get("provider_id", "")).strip()
    s = page.settings
    token = mint(f"portal-dev:{role}:{next(iter(claims.values()), 'op')}", [role], secret=s.dev_signing_secret,
                 issuer=s.jwt_issuer, audience=s.jwt_audience, ttl=s.session_max_age, **claims)
    return _start(page, token, form.get("next") if isinstance(form.get("next"), str) else None)


@router.post("/signout")
async def signout(request: Request) -> Response:
    page = Page(request)
    await page.check_csrf()
    page.sign_out()
    return page.redirect("/")


# ---------------------------------------------------------------- OpenID Connect
async def _discovery(page: Page) -> dict:
    cache = page.request.app.state.__dict__.setdefault("oidc_discovery", {})
    if not cache:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"{page.settings.oidc_issuer}/.well-known/openid-configuration")
            r.raise_for_status()
            cache.update(r.json())
    return cache


def _redirect_uri(page: Page) -> str:
    return f"{page.settings.portal_url}/signin/oidc/callback"


@router.get("/signin/oidc")
async def oidc_start(request: Request) -> Response:
    page = Page(request)
    if not page.settings.oidc_enabled:
        raise PageRefusal(404, "page_not_found")
    try:
        meta = await _discovery(page)
    except (httpx.HTTPError, ValueError):
        return page.render("error.html", status=503, message=page.t("service_unavailable"))
    verifier = secrets.token_urlsafe(48)
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    page.session["oidc"] = {"state": state, "nonce": nonce, "verifier": verifier, "at": time.time(),
                            "next": _safe_next(request.query_params.get("next"))}
    query = urlencode({"response_type": "code", "client_id": page.settings.oidc_client_id,
                       "redirect_uri": _redirect_uri(page), "scope": page.settings.oidc_scopes, "state": state,
                       "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"})
    return page.redirect(f"{meta['authorization_endpoint']}?{query}")


@router.get("/signin/oidc/callback")
async def oidc_callback(request: Request) -> Response:
    page = Page(request)
    if not page.settings.oidc_enabled:
        raise PageRefusal(404, "page_not_found")
    pending = page.session.pop("oidc", None)
    state, code = request.query_params.get("state"), request.query_params.get("code")
    if (not isinstance(pending, dict) or not state or not code or not secrets.compare_digest(state, pending["state"])
            or time.time() - pending["at"] > 600):
        raise PageRefusal(403, "csrf_failed")
    try:
        meta = await _discovery(page)
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(meta["token_endpoint"], data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": _redirect_uri(page),
                "client_id": page.settings.oidc_client_id, "code_verifier": pending["verifier"]},
                auth=(page.settings.oidc_client_id, page.settings.oidc_client_secret)
                if page.settings.oidc_client_secret else None)
        tokens = r.json() if r.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return page.render("error.html", status=503, message=page.t("service_unavailable"))
    access = tokens.get("access_token")
    if not isinstance(access, str):
        return page.render("signin.html", status=401, roles=STAFF_ROLES, error=page.t("login_failed"))
    id_token = tokens.get("id_token")
    if not isinstance(id_token, str) or not await _id_token_verified(page, meta, id_token, pending["nonce"]):
        return page.render("signin.html", status=401, roles=STAFF_ROLES, error=page.t("login_failed"))
    return _start(page, access, pending.get("next"))


async def _issuer_keys(page: Page, meta: dict, *, refresh: bool = False) -> jwt.PyJWKSet:
    """The issuer's signing keys (its ``jwks_uri``), kept until a token names a key not among them."""
    cache = page.request.app.state.__dict__.setdefault("oidc_jwks", {})
    if refresh or "keys" not in cache:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(meta["jwks_uri"])
            r.raise_for_status()
        cache["keys"] = jwt.PyJWKSet.from_dict(r.json())
    return cache["keys"]


async def _id_token_verified(page: Page, meta: dict, id_token: str, nonce: str) -> bool:
    """The ID token is the issuer's (signature against its JWKS, an asymmetric algorithm), about this
    client (``aud``), from the configured issuer (``iss``), not expired, and answers this browser's
    request (``nonce``). Any doubt is a refusal."""
    s = page.settings
    try:
        header = jwt.get_unverified_header(id_token)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ASYMMETRIC:
            return False
        keys: list = []
        for refresh in (False, True):  # a key the issuer has just rotated in: fetch its JWKS once more
            keys = [k for k in (await _issuer_keys(page, meta, refresh=refresh)).keys if kid is None or k.key_id == kid]
            if keys:
                break
        if not keys:
            return False
        claims = jwt.decode(id_token, keys[0].key, algorithms=[alg], audience=s.oidc_client_id, issuer=s.oidc_issuer,
                            options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce"]}, leeway=30)
        return isinstance(claims.get("nonce"), str) and secrets.compare_digest(claims["nonce"].encode(),
                                                                               nonce.encode())
    except (jwt.PyJWTError, httpx.HTTPError, ValueError, KeyError, TypeError):
        return False
