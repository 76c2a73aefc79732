"""Sign-in sessions kept on the server; the browser holds only an opaque id.

The cookie (``seteli_session``; ``__Host-seteli_session`` where cookies are Secure) carries 32 random
bytes and nothing else: HttpOnly, SameSite=Lax, Secure outside development and test, Path=/, no
Max-Age (it ends with the browser; the server ends the session anyway). The portal's database
(``models.PortalSession``) keeps the SHA-256 of the id as the key, never the id, and the session's
data (the user's bearer token, roles, the CSRF token, a pending OpenID Connect sign-in) encrypted
(Fernet) under a key derived from ``PORTAL_SESSION_SECRET`` and the id itself: a copy of the table,
even with the secret, opens no session without the browser's cookie.

- Signing in begins a new session under a new id; the id the browser brought (an anonymous session
  holding the sign-in form's CSRF token) is deleted: nobody can plant an id and wait (fixation).
  Signing in again, as another role, is the only way privileges change, so it begins anew too.
- Signing out deletes the session and every id it has had: a copied cookie no longer works.
- A session ends after ``SESSION_IDLE_SECONDS`` without a request and ``SESSION_MAX_AGE`` after it began.
- A signed-in session's id is replaced by a new one every ``SESSION_ROTATE_SECONDS``. The replaced id
  works on for ``GRACE`` (a request already under way in another tab) and then not; of two requests
  that would replace the same id at once, one does (a conditional update decides).
- Expired sessions are deleted when a request meets them and by each instance's periodic purge (an
  idempotent DELETE, so instances sharing the store may run it at once).
- Nothing is kept in the process: any instance sharing the database serves any session.

SameSite=Lax rather than Strict: the OpenID Connect issuer sends the browser back to
``/signin/oidc/callback`` by a top-level GET from its own site, and a Strict cookie would stay behind
(the pending sign-in, and with it the sign-in, would be lost); so would the session of anyone who
follows a link into the portal from an e-mail or the municipality's site. Lax still keeps the cookie
off every cross-site POST, frame and sub-request; no GET changes anything here, and every form also
carries the session's CSRF token.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seteli_shared import ids
from seteli_shared.clock import Clock
from seteli_shared.db import make_engine
from seteli_shared.logging import get_logger

from .models import PortalSession
from .settings import PortalSettings

log = get_logger("portal.sessions")

#: how long a replaced id keeps working (requests under way in other tabs)
GRACE = timedelta(seconds=30)
#: ``last_seen_at`` is written at most this often (the idle timeout is that much coarse)
TOUCH_EVERY = timedelta(seconds=60)
#: paths that never need a session (no database read for them)
SESSIONLESS = ("/static/", "/health/")

T = PortalSession.__table__


def cookie_name(settings: PortalSettings) -> str:
    """``__Host-`` where the cookie is Secure: the browser then refuses it from any other host or path."""
    return "__Host-seteli_session" if settings.secure_cookies else "seteli_session"


def id_hash(session_id: str) -> str:
    return ids.digest_text(hashlib.sha256(session_id.encode()))


def new_id() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Session:
    """One request's session: its data as a dict, and what is to become of it when the answer goes."""

    data: dict[str, Any] = field(default_factory=dict)
    #: the id the browser brought, when the store knows it (and it has not ended)
    id: str | None = None
    row: PortalSession | None = None
    #: the browser brought an id the store no longer honours (idle, too old, signed out)
    expired: bool = False
    brought_cookie: bool = False
    dirty: bool = False
    beginning: bool = False
    ended: bool = False

    # ---- the dict the pages use
    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty = True

    def pop(self, key: str, default: Any = None) -> Any:
        if key in self.data:
            self.dirty = True
        return self.data.pop(key, default)

    # ---- what the pages do with it
    def csrf_token(self) -> str:
        """This session's CSRF token, made (and with it the session) the first time a form needs one."""
        if "csrf" not in self.data:
            self["csrf"] = secrets.token_urlsafe(24)
        return self.data["csrf"]

    def begin(self, data: dict[str, Any]) -> None:
        """Sign-in: a new session under a new id takes this one's place."""
        self.data, self.beginning, self.ended, self.dirty = dict(data), True, False, True

    def end(self) -> None:
        """Sign-out: this session and every id it has had are deleted (a form rendered after it in the same
        request starts a new, anonymous one for its CSRF token)."""
        self.data, self.ended, self.beginning, self.dirty = {}, True, False, False

    @property
    def signed_in(self) -> bool:
        return "user" in self.data


class SessionStore:
    """The sessions in the portal's database."""

    def __init__(self, settings: PortalSettings, clock: Clock, engine: AsyncEngine | None = None):
        self.settings, self.clock = settings, clock
        self.engine = engine or make_engine(settings.database_url)
        self.secret = settings.portal_session_secret.encode()
        self.idle = timedelta(seconds=settings.session_idle_seconds)
        self.max_age = timedelta(seconds=settings.session_max_age)
        self.rotate_after = timedelta(seconds=settings.session_rotate_seconds)

    # ---- the data, encrypted under the secret and the id
    def _fernet(self, session_id: str) -> Fernet:
        key = hmac.new(self.secret, b"seteli-portal-session\x1f" + session_id.encode(), hashlib.sha256).digest()
        return Fernet(base64.urlsafe_b64encode(key))

    def _seal(self, session_id: str, data: dict) -> str:
        return self._fernet(session_id).encrypt(json.dumps(data, separators=(",", ":")).encode()).decode()

    def _open(self, session_id: str, sealed: str) -> dict | None:
        try:
            return json.loads(self._fernet(session_id).decrypt(sealed.encode()))
        except (InvalidToken, ValueError):
            return None

    def _ended(self, row: PortalSession, now: datetime) -> str | None:
        if now >= row.ends_at:
            return "replaced" if row.replaced_at is not None else "lifetime"
        if now - row.last_seen_at >= self.idle:
            return "idle"
        return None

    # ---- a request's session
    async def load(self, session_id: str | None) -> Session:
        if not session_id:
            return Session()
        if len(session_id) > 64:  # no id of ours: not worth a look-up
            return Session(expired=True, brought_cookie=True)
        now = self.clock.now()
        async with self.engine.connect() as conn:
            found = (await conn.execute(sa.select(T).where(T.c.id_hash == id_hash(session_id)))).first()
        row = PortalSession(**found._mapping) if found else None
        data = self._open(session_id, row.data) if row is not None else None
        why = None if row is None else ("unreadable" if data is None else self._ended(row, now))
        if row is None or why is not None:
            if row is not None:  # met expired: deleted now, not at the next purge
                await self._delete(T.c.id_hash == row.id_hash)
                log.info("portal.session_expired", reason=why)
            return Session(expired=True, brought_cookie=True)
        return Session(data=data, id=session_id, row=row, brought_cookie=True)

    async def settle(self, s: Session) -> str | None:
        """Writes what the request did to its session; returns the id the browser is to keep from now
        on, "" for none (the cookie is cleared), or None when the cookie stays as it is."""
        now = self.clock.now()
        if s.ended or s.beginning:
            # signed out, or signing in: the id the browser had (and its family) is never used again
            if s.row is not None:
                await self._delete(T.c.family == s.row.family)
                if s.ended:
                    log.info("portal.session_ended", reason="signed_out")
            if s.data:  # a new session (the sign-in's, or a form's CSRF token rendered after the end)
                return await self._insert(s.data, secrets.token_hex(16), now, now)
            return "" if s.brought_cookie else None
        if s.row is None:
            if s.dirty and s.data:
                return await self._insert(s.data, secrets.token_hex(16), now, now)
            return "" if s.brought_cookie else None
        if s.signed_in and s.row.replaced_at is None and now - s.row.issued_at >= self.rotate_after:
            return await self._rotate(s, now)
        if s.dirty:
            await self._update(s.row.id_hash, data=self._seal(s.id, s.data), last_seen_at=now)
        elif now - s.row.last_seen_at >= TOUCH_EVERY:
            await self._update(s.row.id_hash, last_seen_at=now)
        return None

    async def _insert(self, data: dict, family: str, started_at: datetime, now: datetime) -> str:
        session_id = new_id()
        async with self.engine.begin() as conn:
            await conn.execute(sa.insert(T).values(
                id_hash=id_hash(session_id), family=family, data=self._seal(session_id, data), started_at=started_at,
                issued_at=now, last_seen_at=now, ends_at=started_at + self.max_age, replaced_at=None))
        return session_id

    async def _rotate(self, s: Session, now: datetime) -> str | None:
        """A new id for a signed-in session; the old one works on for the grace. Only one of two
        requests rotating the same id at once does; the other keeps the id it brought."""
        async with self.engine.begin() as conn:
            won = await conn.execute(sa.update(T).where(T.c.id_hash == s.row.id_hash, T.c.replaced_at.is_(None))
                                     .values(replaced_at=now, ends_at=min(s.row.ends_at, now + GRACE), last_seen_at=now))
            if won.rowcount != 1:
                return None
            session_id = new_id()
            await conn.execute(sa.insert(T).values(
                id_hash=id_hash(session_id), family=s.row.family, data=self._seal(session_id, s.data),
                started_at=s.row.started_at, issued_at=now, last_seen_at=now, ends_at=s.row.ends_at, replaced_at=None))
        log.info("portal.session_rotated")
        return session_id

    async def _update(self, key: str, **values: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.update(T).where(T.c.id_hash == key).values(**values))

    async def _delete(self, where: Any) -> int:
        async with self.engine.begin() as conn:
            return (await conn.execute(sa.delete(T).where(where))).rowcount

    async def purge(self) -> int:
        """Deletes every session past its end or idle for longer than the timeout; the number deleted."""
        now = self.clock.now()
        return await self._delete(sa.or_(T.c.ends_at <= now, T.c.last_seen_at <= now - self.idle))

    async def purge_every(self, seconds: float) -> None:
        """The periodic purge (one task per instance; a failed round is logged and the next one tries)."""
        while True:
            await asyncio.sleep(seconds)
            try:
                purged = await self.purge()
            except Exception:  # noqa: BLE001  (the store may be briefly away: the next round tries again)
                log.exception("portal.session_purge_failed")
                continue
            if purged:
                log.info("portal.sessions_purged", count=purged)

    async def close(self) -> None:
        await self.engine.dispose()


class ServerSessions:
    """ASGI middleware: loads the request's session from the store before the page runs
    (``request.state.session``) and, as the answer starts, writes it back and sets or clears the cookie."""

    def __init__(self, app: ASGIApp, store: SessionStore):
        self.app, self.store = app, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(SESSIONLESS):
            await self.app(scope, receive, send)
            return
        store = self.store
        name = cookie_name(store.settings)
        try:
            session = await store.load(HTTPConnection(scope).cookies.get(name))
        except (SQLAlchemyError, OSError) as exc:  # the store is away: say so, never a sign-in page
            log.warning("portal.session_store_unavailable", error=type(exc).__name__)
            page = "<!doctype html><title>503</title><p>Palvelu ei ole käytettävissä. / Tjänsten är inte tillgänglig. / Service unavailable."
            await HTMLResponse(page, status_code=503, headers={"Retry-After": "5"})(scope, receive, send)
            return
        scope.setdefault("state", {})["session"] = session

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                keep = await store.settle(session)
                if keep is not None:
                    MutableHeaders(scope=message).append("Set-Cookie", _cookie(name, keep, store.settings))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _cookie(name: str, value: str, settings: PortalSettings) -> str:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
    if settings.secure_cookies:
        parts.append("Secure")
    if not value:
        parts.append("Max-Age=0")
    return "; ".join(parts)
