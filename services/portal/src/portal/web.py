"""What every page shares: the language, the session (the user's token), CSRF protection, who may see
a page, rendering, and the error pages.

The session is kept on the server (``sessions.py``); the cookie holds only its opaque id. It holds the
user's bearer token and what the portal needs to choose pages (roles, and the funder, provider or
voucher the token is bound to); the services verify the token themselves on every call. Every form
carries the session's CSRF token (``csrf_token()`` in the templates, made when a form first needs one).

A personal identity code that a person types into a form or an address (in any spelling the services'
guard knows: ``seteli_shared.privacy``) is refused here, before it could be sent on, shown again in a
re-filled form or a ``next`` address, or logged: a 422 page that says not to write one, never repeating it."""
from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from seteli_shared.addresses import client_address
from seteli_shared.auth import FUNDER_STAFF, PROVIDER_ROLES, InvalidToken, Principal, Role, TokenVerifier
from seteli_shared.codes import grouped, normalise
from seteli_shared.municipalities import name_of
from seteli_shared.privacy import REASON, find_in

from . import i18n
from .backend import Backend, BackendError, Unavailable
from .formats import Formats
from .sessions import Session
from .settings import PortalSettings

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
LANG_COOKIE = "lang"

#: who may see each area of the portal
CLIENT = frozenset({Role.CLIENT})
PROVIDER = frozenset(PROVIDER_ROLES)
FUNDER = frozenset(FUNDER_STAFF)
OPERATOR = frozenset({Role.OPERATOR})
#: the page that says not to write a personal identity code (``i18n``: ``reason_personal_identity_code``)
PERSONAL_DATA = f"reason_{REASON}"
#: what the identity provider sends back to the sign-in callback: never shown, stored, logged or passed to a
#: service, and random text of its making that must not be refused by chance
_IDENTITY_PROVIDER_PARAMETERS = frozenset({"code", "state", "session_state", "iss"})


class PageRefusal(Exception):
    """A page the user may not see (``status`` 401: not signed in, 403: another role), or a form that
    failed its CSRF check."""

    def __init__(self, status: int, key: str):
        super().__init__(key)
        self.status, self.key = status, key


@dataclass
class User:
    token: str
    roles: list[str]
    subject: str
    funder_id: str | None = None
    provider_id: str | None = None
    voucher_id: str | None = None
    exp: float = 0

    def has(self, allowed: frozenset) -> bool:
        return any(r in allowed for r in self.roles)

    def label(self, t) -> str:  # noqa: ANN001
        """Who is signed in, in words: the roles by name (``t.role``), with the funder's code; a client and a
        provider are not named by an id (it tells a person nothing)."""
        roles = ", ".join(t.role(r) for r in self.roles)
        return roles + (f" ({self.funder_id})" if self.funder_id else "")

    @property
    def area(self) -> str:
        """The portal's start page for this user."""
        if Role.OPERATOR in self.roles:
            return "/operator"
        if any(r in FUNDER for r in self.roles):
            return "/funder"
        if any(r in PROVIDER for r in self.roles):
            return "/provider"
        if Role.CLIENT in self.roles:
            return "/client"
        return "/"


def user_from_principal(token: str, principal: Principal, exp: float) -> User:
    return User(token=token, roles=[str(r) for r in principal.roles], subject=principal.subject,
                funder_id=principal.funder_id, provider_id=principal.provider_id, voucher_id=principal.voucher_id,
                exp=exp)


class Page:
    """One request's context: settings, backend, language, the user (if signed in)."""

    def __init__(self, request: Request):
        self.request = request
        app = request.app
        self.settings: PortalSettings = app.state.settings
        self.backend: Backend = app.state.backend
        self.verifier: TokenVerifier = app.state.verifier
        self.lang = i18n.pick(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE),
                              request.headers.get("accept-language"))
        self.t = i18n.translator(self.lang)
        # (a path the sessions skip, such as a missing static file, gets an empty one that is never kept)
        self.session: Session = getattr(request.state, "session", None) or Session()
        raw = self.session.get("user")
        self.user: User | None = None
        self.expired = self.session.expired
        if isinstance(raw, dict):
            user = User(**raw)
            if user.exp and user.exp < time.time():
                self.sign_out()
                self.expired = True
            else:
                self.user = user

    # ---- access
    def need(self, allowed: frozenset) -> User:
        if self.user is None:
            raise PageRefusal(401, "session_expired" if self.expired else "sign_in_needed")
        if not self.user.has(allowed):
            raise PageRefusal(403, "forbidden")
        return self.user

    def sign_in(self, user: User) -> None:
        """A new session under a new id, with a new CSRF token (the id and token from before are gone)."""
        self.session.begin({"user": user.__dict__, "csrf": secrets.token_urlsafe(24)})
        self.user = user

    def sign_out(self) -> None:
        self.session.end()
        self.user = None

    @property
    def client_address(self) -> str:
        """The browser's address: the peer's, or from the portal's own trusted proxies' ``X-Forwarded-For``."""
        return client_address(self.request, self.settings.proxies)

    async def check_csrf(self) -> dict[str, Any]:
        """The submitted form, when its CSRF token is this session's; else a 403 page."""
        form = await self.request.form()
        sent, mine = form.get("csrf"), self.session.get("csrf")
        if not (isinstance(sent, str) and isinstance(mine, str) and mine and hmac.compare_digest(sent, mine)):
            raise PageRefusal(403, "csrf_failed")
        typed = [[name, value] for name, value in form.multi_items() if name != "csrf" and isinstance(value, str)]
        if find_in(typed):  # an uploaded file goes on to payments, which refuses such lines one by one
            raise PageRefusal(422, PERSONAL_DATA)
        return form

    # ---- calls to the services with the user's token
    def _refused_token(self) -> PageRefusal:
        """A service no longer accepts the session's token (expired, revoked key): the session ends."""
        self.sign_out()
        return PageRefusal(401, "session_expired")

    async def call(self, service: str, method: str, path: str, **kw: Any) -> Any:
        token = self.user.token if self.user else None
        try:
            return await self.backend.json(service, method, path, token=token, **kw)
        except BackendError as err:
            if err.status == 401 and token:
                raise self._refused_token() from None
            raise

    async def pages(self, service: str, path: str, **kw: Any) -> list:
        """Every item of a paged list, called with the user's token."""
        token = self.user.token if self.user else None
        try:
            return await self.backend.all_pages(service, path, token=token, **kw)
        except BackendError as err:
            if err.status == 401 and token:
                raise self._refused_token() from None
            raise

    async def raw(self, service: str, method: str, path: str, **kw: Any):  # noqa: ANN201
        token = self.user.token if self.user else None
        r = await self.backend.request(service, method, path, token=token, **kw)
        if r.status_code == 401 and token:
            raise self._refused_token()
        return r

    # ---- answers
    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        fmt = Formats(self.lang)
        response = TEMPLATES.TemplateResponse(self.request, template, {
            "t": self.t, "lang": self.lang, "languages": i18n.LANGUAGES, "language_names": i18n.LANGUAGE_NAMES,
            "user": self.user, "csrf_token": self.session.csrf_token, "settings": self.settings,
            "path": self.request.url.path, "eur": fmt.eur, "fmt": fmt, "lang_url": self.language_url,
            "code": grouped_code, "municipality": lambda c: name_of(c, self.lang), **context}, status_code=status)
        self._remember_language(response)
        return response

    def language_url(self, code: str) -> str:
        """This page in another language, its query kept (filters, period, category): a GET page is asked
        again; after a form (a POST) the area's own page, since the form is not sent again."""
        if self.request.method != "GET":
            return f"{self.user.area if self.user else '/'}?lang={code}"
        if address_carries_personal_data(self.request):  # never repeat an identity code, not even in a link
            return f"/?lang={code}"
        kept = [(k, v) for k, v in self.request.query_params.multi_items() if k != "lang"]
        return f"{self.request.url.path}?{urlencode([*kept, ('lang', code)])}"

    def redirect(self, url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)

    def _remember_language(self, response: Response) -> None:
        if self.request.query_params.get("lang") in i18n.LANGUAGES:
            response.set_cookie(LANG_COOKIE, self.lang, max_age=365 * 24 * 3600, samesite="lax",
                                secure=bool(self.settings.secure_cookies))

    def error_text(self, err: BackendError) -> str:
        """A service's refusal as a sentence in the page's language, its code kept at the end for
        support (``(koodi: units_exceeded)``); a code the portal has no words for says so, never the
        service's English message."""
        if isinstance(err, Unavailable) or err.status in (502, 503, 504):
            return self.t("service_unavailable")
        sentence = self.t.reason(err.reason)  # type: ignore[attr-defined]
        if sentence == err.reason:
            sentence = self.t("refused_unknown")
        return f"{self.t('refused_because')}: {sentence} ({self.t('support_code')}: {err.reason})"


def small_int(text: str, digits: int = 6) -> int | None:
    """A whole number a person typed (ASCII digits only, at most ``digits`` of them), else None.
    ``str.isdigit`` alone admits ``²`` and other digits ``int`` refuses."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= digits else None


def eur(cents: Any) -> str:
    """Cents as euros the Finnish way: 1 234,50 € (``formats``)."""
    return Formats("fi").eur(cents)


def grouped_code(code: Any) -> str:
    """A voucher or login code in groups of four, as people read it (``7RH8-ZB3R-Z5K``)."""
    if not code:
        return ""
    compact = normalise(str(code))
    return grouped(compact) if compact else str(code)


def address_carries_personal_data(request: Request) -> bool:
    """Whether the request's path or a query parameter (name or value) holds a personal identity code."""
    path = request.url.path
    if find_in([path, unquote(path)]):
        return True
    oidc = path.startswith("/signin/oidc")
    return find_in([[name, value] for name, value in request.query_params.multi_items()
                    if not (oidc and name in _IDENTITY_PROVIDER_PARAMETERS)]) is not None


def refusal_page(request: Request, exc: PageRefusal) -> Response:
    page = Page(request)
    if exc.status == 401 and request.method == "GET":
        return page.redirect(f"/signin?next={request.url.path}")
    return page.render("error.html", status=exc.status, message=page.t(exc.key))
