"""The portal's sessions kept on the server: the cookie is an opaque id and nothing else, signing out
ends the session for every copy of the cookie, idle and absolute timeouts (time driven by a clock the
test moves), a new id at sign-in and every few minutes, expired sessions purged, and two portal
instances sharing the store (PostgreSQL) serving the same session. The services are not needed: the
portal's calls to them are answered 503 by a transport of the test."""
from __future__ import annotations

import base64
import json
import re
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Iterator

import httpx
import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from portal.app import create_app
from portal.models import PortalSession
from portal.sessions import GRACE, id_hash
from portal.settings import PortalSettings
from seteli_shared.clock import FixedClock

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
COOKIE = "seteli_session"


def services_away(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"error": {"reason": "service_unavailable", "message": "", "details": {}}})


@contextmanager
def portal(settings: PortalSettings | None = None, *, https: bool = False, clock: FixedClock | None = None,
           **kw) -> Iterator[TestClient]:  # noqa: ANN003
    app = create_app(settings or PortalSettings(environment="test"), transport=httpx.MockTransport(services_away))
    if clock is not None:
        app.state.sessions.clock = clock
    with TestClient(app, base_url="https://portal.example" if https else "http://testserver",
                    follow_redirects=False, **kw) as c:
        yield c


def sign_in(c: TestClient, role: str = "funder_reporting", **tenant: str) -> httpx.Response:
    csrf = CSRF.search(c.get("/signin").text).group(1)
    r = c.post("/signin/dev", data={"csrf": csrf, "role": role, **({"funder_id": "091"} | tenant)})
    assert r.status_code == 303, r.text
    return r


def signed_in(c: TestClient) -> bool:
    r = c.get("/funder")
    assert r.status_code in (200, 303), r.text
    return r.status_code == 200


def rows(c: TestClient) -> list:
    engine = c.app.state.sessions.engine

    async def read() -> list:
        async with engine.connect() as conn:
            return list((await conn.execute(sa.select(PortalSession.__table__))).all())

    return c.portal.call(read)


def stored_token(c: TestClient, session_id: str) -> str:
    """The token as the store keeps it, opened with the id (which only the browser has)."""
    store = c.app.state.sessions
    (row,) = [r for r in rows(c) if r.id_hash == id_hash(session_id)]
    return store._open(session_id, row.data)["user"]["token"]


def test_the_cookie_is_an_opaque_id_and_the_token_stays_on_the_server_encrypted():
    with portal() as c:
        r = sign_in(c)
        session_id = c.cookies[COOKIE]
        set_cookie = r.headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Path=/" in set_cookie
        assert "Max-Age" not in set_cookie and "Secure" not in set_cookie  # test environment: plain http
        # decoded, the cookie is 32 random bytes: no token, no claims, no signature to strip
        raw = base64.urlsafe_b64decode(session_id + "=" * (-len(session_id) % 4))
        assert len(raw) == 32 and b"funder_reporting" not in raw and b"091" not in raw
        with pytest.raises(jwt.DecodeError):
            jwt.decode(session_id, options={"verify_signature": False})
        token = stored_token(c, session_id)
        assert jwt.decode(token, options={"verify_signature": False})["roles"] == ["funder_reporting"]
        assert token not in session_id
        # the table holds neither the id nor the token readable
        (row,) = rows(c)
        assert session_id not in str(row) and token not in str(row) and "funder_reporting" not in str(row)
        assert row.id_hash == id_hash(session_id)
        # and the secret alone opens nothing: the id is part of the key
        assert c.app.state.sessions._open("another-id", row.data) is None


def test_outside_development_the_cookie_is_secure_and_host_only(tmp_path):
    keys = tmp_path / "jwks.json"
    public = jwt.algorithms.RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048)
                                                .public_key(), as_dict=True)
    keys.write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    settings = PortalSettings(environment="production", portal_session_secret="s" * 40, jwks_url=str(keys))
    with portal(settings, https=True) as c:
        set_cookie = c.get("/signin").headers["set-cookie"]
        assert set_cookie.startswith("__Host-seteli_session=")
        assert all(part in set_cookie for part in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"))
        assert "Domain" not in set_cookie


def test_a_public_page_starts_no_session_and_the_sign_in_form_an_anonymous_one():
    with portal() as c:
        assert "set-cookie" not in c.get("/").headers and not rows(c)
        c.get("/signin")
        (row,) = rows(c)
        assert "user" not in c.app.state.sessions._open(c.cookies[COOKIE], row.data)


def test_signing_out_ends_the_session_and_a_copied_cookie_is_refused():
    with portal() as c, portal() as thief:
        sign_in(c)
        copied = c.cookies[COOKIE]
        thief.cookies.set(COOKIE, copied)
        assert signed_in(thief), "the copy works while the session lasts"
        csrf = CSRF.search(c.get("/funder").text).group(1)
        r = c.post("/signout", data={"csrf": csrf})
        assert r.status_code == 303 and "Max-Age=0" in r.headers["set-cookie"]
        assert not rows(c), "the session is gone from the store"
        thief.cookies.set(COOKIE, copied)
        assert not signed_in(thief)


def test_signing_in_gives_a_new_id_and_the_id_from_before_is_worth_nothing():
    """Session fixation: an id planted in the victim's browser before sign-in is not the signed-in one."""
    with portal() as c, portal() as attacker:
        c.get("/signin")
        planted = c.cookies[COOKIE]
        sign_in(c)
        assert c.cookies[COOKIE] != planted
        attacker.cookies.set(COOKIE, planted)
        assert not signed_in(attacker)
        assert len(rows(c)) == 1
        # signing in again (another role: a change of privileges) gives yet another id
        before = c.cookies[COOKIE]
        sign_in(c, "funder_finance")
        assert c.cookies[COOKIE] != before and len(rows(c)) == 1


def test_a_session_ends_after_its_idle_timeout_and_after_its_absolute_lifetime():
    clock = FixedClock(datetime.now(timezone.utc))
    settings = PortalSettings(environment="test", session_idle_seconds=1800, session_max_age=8 * 3600,
                              session_rotate_seconds=8 * 3600)
    with portal(settings, clock=clock) as c:
        sign_in(c)
        for _ in range(3):  # a request now and then keeps it going
            clock.advance(seconds=1799)
            assert signed_in(c)
        clock.advance(seconds=1800)
        r = c.get("/funder")
        assert r.status_code == 303 and r.headers["location"] == "/signin?next=/funder"
        assert not rows(c), "met expired: deleted at once"

        sign_in(c)
        for _ in range(16):  # 7 h 44 min of steady use
            clock.advance(minutes=29)
            assert signed_in(c)
        clock.advance(minutes=17)
        assert not signed_in(c), "eight hours after sign-in, however busy"


def test_the_id_is_replaced_every_few_minutes_and_the_old_one_works_only_for_a_moment():
    clock = FixedClock(datetime.now(timezone.utc))
    with portal(PortalSettings(environment="test", session_rotate_seconds=600), clock=clock) as c, \
            portal(clock=clock) as other_tab:
        sign_in(c)
        first = c.cookies[COOKIE]
        clock.advance(seconds=599)
        assert signed_in(c) and c.cookies[COOKIE] == first
        clock.advance(seconds=1)
        r = c.get("/funder")
        assert r.status_code == 200 and "set-cookie" in r.headers
        second = c.cookies[COOKIE]
        assert second != first
        other_tab.cookies.set(COOKIE, first)
        assert signed_in(other_tab), "a request under way with the old id still works"
        clock.advance(seconds=GRACE.total_seconds())
        other_tab.cookies.set(COOKIE, first)
        assert not signed_in(other_tab)
        assert signed_in(c)
        # signing out with the new id ends every id the session had
        clock.advance(seconds=600)
        c.get("/funder")
        third = c.cookies[COOKIE]
        assert third not in (first, second)
        csrf = CSRF.search(c.get("/funder").text).group(1)
        c.post("/signout", data={"csrf": csrf})
        other_tab.cookies.set(COOKIE, second)
        assert not signed_in(other_tab) and not rows(c)


def test_expired_sessions_are_purged_by_the_periodic_job():
    clock = FixedClock(datetime.now(timezone.utc))
    with portal(PortalSettings(environment="test", session_purge_seconds=1), clock=clock) as c:
        for _ in range(3):
            c.cookies.clear()
            sign_in(c)
        assert len(rows(c)) == 3
        clock.advance(seconds=c.app.state.settings.session_idle_seconds)
        deadline = time.monotonic() + 10
        while rows(c) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not rows(c), "nobody came back, and still they were deleted"


async def test_two_portal_instances_sharing_the_store_both_serve_the_session(pg):  # noqa: ANN001
    settings = PortalSettings(environment="test", database_url=await pg.create("portal"))
    with portal(settings) as one, portal(settings) as two:
        sign_in(one)
        session_id = one.cookies[COOKIE]
        two.cookies.set(COOKIE, session_id)
        assert signed_in(two), "the other instance knows the session"
        csrf = CSRF.search(two.get("/funder").text).group(1)
        assert two.post("/signout", data={"csrf": csrf}).status_code == 303
        assert not signed_in(one), "signed out on one instance, ended on both"


def test_a_form_without_the_sessions_csrf_token_is_refused_even_when_both_are_empty():
    with portal() as c:
        assert c.post("/signin/dev", data={"csrf": "", "role": "operator"}).status_code == 403
        assert c.post("/signout", data={"csrf": ""}).status_code == 403


def test_a_form_rendered_after_the_session_ended_in_the_same_request_gets_a_new_anonymous_session():
    """As when a page finds the signed-in user's token expired, ends the session, and shows the sign-in
    form: its CSRF token must belong to a session the browser keeps, or the form could never be sent."""
    with portal() as c:
        sign_in(c)
        store = c.app.state.sessions

        async def ended_then_form() -> tuple:
            s = await store.load(c.cookies[COOKIE])
            s.end()
            token = s.csrf_token()
            kept = await store.settle(s)
            return token, kept, await store.load(kept)

        token, kept, again = c.portal.call(ended_then_form)
        assert kept and kept != c.cookies[COOKIE]
        assert again.get("csrf") == token and "user" not in again
        assert len(rows(c)) == 1, "the signed-in session is gone, the anonymous one kept"
