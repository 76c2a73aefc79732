"""Webhooks only to the public internet, on PostgreSQL and the real RabbitMQ with receivers on this machine:
refused when set (http, loopback, private, link-local, shared, IPv6 forms, names resolving to such addresses),
checked again at each delivery and connected to at the address checked (the name as Host and TLS server
name), plain http and loopback only behind the development settings, no redirect followed, a receiver that
answers slowly cut off at the total timeout, and of a huge answer only the first 64 KiB read."""
from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from decimal import Decimal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from sqlalchemy import select

from payments.notices import egress, notices
from payments.models import Webhook
from payments.settings import PaymentsSettings
from seteli_shared.auth import mint
from seteli_shared.db import unit_of_work
from seteli_shared.logging import new_id
from seteli_shared.testing import eventually


def manager(provider_id: str) -> dict:
    return {"Authorization": f"Bearer {mint('t:manager', ['provider_manager'], provider_id=provider_id)}"}


class Names:
    """A resolver of the test's own: the names it is told resolve to what it is told, the rest as the system
    resolves them (``localhost``); it notes every name asked."""

    def __init__(self) -> None:
        self.known: dict[str, list[str]] = {}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host in self.known:
            return list(self.known[host])
        return await egress.system_resolver(host, port)


class LocalCA:
    """A certificate authority of the test's own, trusted by the webhook worker (``webhook_tls``)."""

    def __init__(self, tmp_path) -> None:  # noqa: ANN001
        self.tmp = tmp_path
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seteli test CA")])
        self.cert = (self._builder(name, name, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.client = ssl.create_default_context(cadata=self.cert.public_bytes(serialization.Encoding.PEM).decode())

    @staticmethod
    def _builder(subject, issuer, public_key) -> x509.CertificateBuilder:  # noqa: ANN001
        now = dt.datetime.now(dt.timezone.utc)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(hours=1)))

    def server(self, dns_name: str) -> ssl.SSLContext:
        """A receiver's TLS context with a certificate for ``dns_name``."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]), self.cert.subject,
                              key.public_key())
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
                .sign(self.key, hashes.SHA256()))
        path = self.tmp / f"{dns_name}.pem"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(path)
        return context


class Receiver:
    """A provider's receiver on 127.0.0.1: notes each request's head (and, over TLS, the server name the
    client asked for), then answers as ``answer`` writes (``ok`` by default)."""

    def __init__(self, answer=None, tls: ssl.SSLContext | None = None) -> None:  # noqa: ANN001
        self.answer, self.tls = answer or ok, tls
        self.requests: list[dict[str, str]] = []
        self.server_names: list[str | None] = []
        self.sent = 0  # bytes of answers written
        if tls is not None:
            tls.sni_callback = lambda _obj, name, _ctx: self.server_names.append(name)

    async def __aenter__(self) -> "Receiver":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:  # noqa: ANN002
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
            await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(headers)
            await self.answer(self, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()


async def ok(receiver: Receiver, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await writer.drain()


@pytest.fixture
def names() -> Names:
    return Names()


@pytest.fixture
def ca(tmp_path) -> LocalCA:  # noqa: ANN001
    return LocalCA(tmp_path)


@pytest.fixture
def live_state(names, ca) -> dict:  # noqa: ANN001
    return {"webhook_resolver": names, "webhook_tls": ca.client}


FAST = {"webhook_poll_seconds": 0.05, "webhook_retry_base_seconds": 0.05}
DEVELOPMENT = {**FAST, "webhook_allow_http": True, "webhook_allow_loopback": True}


async def set_hook(w, provider_id: str, url: str):  # noqa: ANN001, ANN201
    return await w.client.put(f"/providers/{provider_id}/webhook", json={"url": url}, headers=manager(provider_id))


async def notice_for(w, provider_id: str) -> None:  # noqa: ANN001
    """A settlement notice for the provider, recorded as a settlement run records it."""
    notice = notices.SettlementNotice(
        settlement_id=new_id(), run_id=new_id(), provider_id=provider_id, funder_id="091", charge_count=1,
        gross_cents=10000, fee_cents=500, net_cents=9500, fee_rate=Decimal("0.05"), reference="RF18539007547034",
        payout_reason="manual", created_at=w.clock.now(), statement_path="/settlements/x/statement")
    async with unit_of_work(w.app.state.runtime.sessions) as session:
        await notices.send_notice(session, notice, dt.datetime.now(dt.timezone.utc))


async def deliveries(w, provider_id: str) -> list[dict]:  # noqa: ANN001
    r = await w.client.get(f"/providers/{provider_id}/webhook/deliveries")
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def attempted(w, provider_id: str, attempts: int = 1, timeout: float = 15.0) -> dict:  # noqa: ANN001
    """The provider's latest delivery once it has been attempted ``attempts`` times (or delivered)."""
    async def done():  # noqa: ANN202
        items = await deliveries(w, provider_id)
        return items and (items[-1]["attempts"] >= attempts or items[-1]["status"] == "delivered") and items[-1]

    return await eventually(done, timeout=timeout)


# ------------------------------------------------------------------ when the URL is set
REFUSED_WHEN_SET = [
    ("http://hooks.example.fi/n", "webhook_not_https"),
    ("http://127.0.0.1:8080/n", "webhook_not_https"),
    ("https://127.0.0.1/n", "webhook_address_not_public"),
    ("https://127.0.0.2:8443/n", "webhook_address_not_public"),
    ("https://[::1]/n", "webhook_address_not_public"),
    ("https://10.0.0.1/n", "webhook_address_not_public"),
    ("https://192.168.1.1/n", "webhook_address_not_public"),
    ("https://169.254.169.254/latest/meta-data/", "webhook_address_not_public"),
    ("https://100.64.0.1/n", "webhook_address_not_public"),
    ("https://0.0.0.0/n", "webhook_address_not_public"),
    ("https://224.0.0.1/n", "webhook_address_not_public"),
    ("https://[fe80::1]/n", "webhook_address_not_public"),
    ("https://[fd00::5]/n", "webhook_address_not_public"),
    ("https://[::ffff:127.0.0.1]/n", "webhook_address_not_public"),
    ("https://[::ffff:a9fe:a9fe]/n", "webhook_address_not_public"),
    ("https://[2002:7f00:1::1]/n", "webhook_address_not_public"),
    ("https://[64:ff9b::a9fe:a9fe]/n", "webhook_address_not_public"),
    ("https://2130706433/n", "webhook_address_not_public"),  # 127.0.0.1 written as one number
    ("https://localhost:8443/n", "webhook_address_not_public"),  # the system resolves it: 127.0.0.1, ::1
    ("https://inside.example.fi/n", "webhook_address_not_public"),
    ("https://metadata.example.fi/n", "webhook_address_not_public"),
    ("https://v6-inside.example.fi/n", "webhook_address_not_public"),
    ("https://public-and-inside.example.fi/n", "webhook_address_not_public"),
    ("https://nowhere.invalid/n", "webhook_address_unresolvable"),
]


@pytest.mark.parametrize("live_settings", [FAST])
async def test_a_webhook_is_refused_when_set_unless_https_at_a_public_address(live, names):  # noqa: ANN001
    w, p = live, "prov-hook-set"
    names.known.update({"hooks.example.fi": ["93.184.216.34", "2606:4700::1111"],
                        "inside.example.fi": ["10.20.30.40"], "metadata.example.fi": ["169.254.169.254"],
                        "v6-inside.example.fi": ["fd12:3456::7"],
                        "public-and-inside.example.fi": ["93.184.216.34", "192.168.1.10"]})
    r = await set_hook(w, p, "https://hooks.example.fi/seteli/notices")
    assert r.status_code == 200, r.text
    secret = r.json()["secret"]
    wrong = []
    for url, reason in REFUSED_WHEN_SET:
        r = await set_hook(w, p, url)
        if (r.status_code, r.json().get("error", {}).get("reason")) != (422, reason):
            wrong.append((url, r.status_code, r.text[:200]))
    assert wrong == []
    async with w.app.state.runtime.sessions() as session:
        hook = (await session.execute(select(Webhook).where(Webhook.provider_id == p))).scalar_one()
    assert (hook.url, hook.secret) == ("https://hooks.example.fi/seteli/notices", secret), "refusals change nothing"


@pytest.mark.parametrize("live_settings", [DEVELOPMENT])
async def test_plain_http_and_loopback_only_behind_the_development_settings(live):  # noqa: ANN001
    w, p = live, "prov-hook-dev"
    for url in ("http://127.0.0.1:8080/n", "http://localhost:8080/n", "http://[::1]:8080/n"):
        r = await set_hook(w, p, url)
        assert r.status_code == 200, (url, r.text)
    for url in ("http://10.0.0.1/n", "http://169.254.169.254/latest", "http://[fd00::1]/n", "http://[fe80::1]/n",
                "http://[::ffff:127.0.0.1]/n"):
        r = await set_hook(w, p, url)
        assert (r.status_code, r.json()["error"]["reason"]) == (422, "webhook_address_not_public"), url
    for setting in ("webhook_allow_http", "webhook_allow_loopback"):
        with pytest.raises(ValidationError, match="development and test only"):
            PaymentsSettings(environment="production", jwks_url="/nonexistent", database_url="sqlite+aiosqlite://",
                             idempotency_key_secret="s" * 40, **{setting: True})


# ------------------------------------------------------------------ at each delivery
@pytest.mark.parametrize("live_settings", [{**DEVELOPMENT, "webhook_allow_loopback": False,
                                            "webhook_max_attempts": 3}])
async def test_a_name_that_resolves_elsewhere_at_delivery_is_refused_then(live, names):  # noqa: ANN001
    """DNS rebinding: public when set, the operator's own network when delivering."""
    w, p = live, "prov-hook-rebind"
    async with Receiver() as receiver:
        names.known["hooks.rebind.test"] = ["93.184.216.34"]
        assert (await set_hook(w, p, f"http://hooks.rebind.test:{receiver.port}/n")).status_code == 200
        names.known["hooks.rebind.test"] = ["127.0.0.1"]  # the receiver's: reachable, if anything connected
        await notice_for(w, p)
        delivery = await attempted(w, p, attempts=3)
    assert delivery["status"] != "delivered" and receiver.requests == []
    assert [a["error"] for a in delivery["log"]] == ["webhook_address_not_public"] * 3
    assert names.asked.count("hooks.rebind.test") == 4, "resolved when set and again at each attempt"


@pytest.mark.parametrize("live_settings", [DEVELOPMENT])
async def test_a_delivery_connects_to_the_address_it_checked_with_the_name_as_host(live, names):  # noqa: ANN001
    w, p = live, "prov-hook-pinned"
    async with Receiver() as receiver:
        # a name only the service's resolver knows: the delivery can reach the receiver only at the address
        # the check found, never by resolving the name again on its own
        names.known["hooks.pinned.test"] = ["127.0.0.1"]
        assert (await set_hook(w, p, f"http://hooks.pinned.test:{receiver.port}/seteli")).status_code == 200
        await notice_for(w, p)
        delivery = await attempted(w, p)
        assert delivery["status"] == "delivered", delivery
        assert [r["host"] for r in receiver.requests] == [f"hooks.pinned.test:{receiver.port}"]

        names.known["hooks.pinned.test"] = ["10.9.8.7"]  # now inside: refused at the next delivery
        await notice_for(w, p)
        refused = await attempted(w, p)
        assert refused["log"][0]["error"] == "webhook_address_not_public" and len(receiver.requests) == 1
        names.known["hooks.pinned.test"] = ["127.0.0.1"]  # back: the retry goes through
        assert (await attempted(w, p, attempts=9))["status"] == "delivered" and len(receiver.requests) == 2


@pytest.mark.parametrize("live_settings", [{**FAST, "webhook_allow_loopback": True}])
async def test_over_https_the_checked_address_is_connected_to_and_the_certificate_verified_for_the_name(
        live, names, ca):  # noqa: ANN001
    w = live
    async with Receiver(tls=ca.server("hooks.tls.test")) as receiver, \
            Receiver(tls=ca.server("someone-else.test")) as impostor:
        names.known.update({"hooks.tls.test": ["127.0.0.1"], "hooks.impostor.test": ["127.0.0.1"]})
        assert (await set_hook(w, "prov-tls", f"https://hooks.tls.test:{receiver.port}/n")).status_code == 200
        assert (await set_hook(w, "prov-impostor", f"https://hooks.impostor.test:{impostor.port}/n")
                ).status_code == 200
        await notice_for(w, "prov-tls")
        await notice_for(w, "prov-impostor")
        delivered, refused = await attempted(w, "prov-tls"), await attempted(w, "prov-impostor")
    assert delivered["status"] == "delivered", delivered
    assert receiver.server_names == ["hooks.tls.test"], "the name sent for TLS (SNI), not the address"
    assert [r["host"] for r in receiver.requests] == [f"hooks.tls.test:{receiver.port}"]
    # a certificate for another name at the checked address: the connection is refused, nothing is sent
    assert refused["status"] != "delivered" and refused["log"][0]["error"] == "ConnectError"
    assert impostor.requests == []


# ------------------------------------------------------------------ what a receiver answers
@pytest.mark.parametrize("live_settings", [{**DEVELOPMENT, "webhook_max_attempts": 2}])
async def test_a_redirect_is_not_followed(live):  # noqa: ANN001
    w, p = live, "prov-hook-redirect"
    async with Receiver() as elsewhere:
        async def redirect(receiver: Receiver, writer: asyncio.StreamWriter) -> None:
            writer.write(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{elsewhere.port}/inside\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()

        async with Receiver(redirect) as receiver:
            assert (await set_hook(w, p, f"http://127.0.0.1:{receiver.port}/n")).status_code == 200
            await notice_for(w, p)
            delivery = await attempted(w, p, attempts=2)
            await asyncio.sleep(0.3)
    assert [(a["status_code"], a["error"]) for a in delivery["log"]] == [(307, "http_307")] * 2
    assert delivery["status"] != "delivered" and len(receiver.requests) == 2 and elsewhere.requests == []


@pytest.mark.parametrize("live_settings", [{**DEVELOPMENT, "webhook_timeout_seconds": 1.0,
                                            "webhook_max_attempts": 1}])
async def test_a_receiver_that_answers_slowly_is_cut_off_at_the_total_timeout(live):  # noqa: ANN001
    w = live

    async def trickle(receiver: Receiver, writer: asyncio.StreamWriter) -> None:
        """A 200 whose body comes a byte at a time: each read is quick, the answer never ends."""
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        while True:
            writer.write(b".")
            await writer.drain()
            await asyncio.sleep(0.05)

    async def silent(receiver: Receiver, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with Receiver(trickle) as slow, Receiver(silent) as mute:
        assert (await set_hook(w, "prov-trickle", f"http://127.0.0.1:{slow.port}/n")).status_code == 200
        assert (await set_hook(w, "prov-silent", f"http://127.0.0.1:{mute.port}/n")).status_code == 200
        await notice_for(w, "prov-trickle")
        await notice_for(w, "prov-silent")
        trickled, unanswered = await attempted(w, "prov-trickle"), await attempted(w, "prov-silent")
    for delivery in (trickled, unanswered):
        [attempt] = delivery["log"]
        assert attempt["error"] == "timeout" and delivery["status"] != "delivered", delivery
        assert 900 <= attempt["duration_ms"] < 3000, attempt


@pytest.mark.parametrize("live_settings", [{**DEVELOPMENT, "webhook_timeout_seconds": 30.0}])
async def test_of_a_huge_answer_only_the_first_64_kib_are_read(live):  # noqa: ANN001
    w, p = live, "prov-hook-huge"
    stopped = asyncio.Event()

    async def endless(receiver: Receiver, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        try:
            while True:
                writer.write(chunk)
                await writer.drain()
                receiver.sent += 65536
        finally:
            stopped.set()

    async with Receiver(endless) as receiver:
        assert (await set_hook(w, p, f"http://127.0.0.1:{receiver.port}/n")).status_code == 200
        started = time.monotonic()
        await notice_for(w, p)
        delivery = await attempted(w, p)
        await asyncio.wait_for(stopped.wait(), 10)
    assert delivery["status"] == "delivered" and delivery["log"][0]["status_code"] == 200
    assert time.monotonic() - started < 10, "not read until the 30 s timeout"
    assert receiver.sent < 64 * 1024 * 1024, f"the rest was never read: {receiver.sent} bytes written"


@pytest.mark.parametrize("live_settings", [DEVELOPMENT])
async def test_deliveries_are_counted_by_outcome_on_metrics(live, names):  # noqa: ANN001
    """``seteli_webhook_deliveries_total{outcome}`` on /metrics: a delivery made, and one refused at its address
    (tried again later), each counted once the worker has recorded it; no provider in the labels."""
    from prometheus_client.parser import text_string_to_metric_families

    async def counted() -> dict[str, float]:
        text = (await live.client.get("/metrics")).text
        assert "prov-hook-counted" not in text
        return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(text)
                if f.name == "seteli_webhook_deliveries" for s in f.samples if s.name.endswith("_total")}

    w, p = live, "prov-hook-counted"
    before = await counted()
    async with Receiver() as receiver:
        names.known["hooks.counted.test"] = ["127.0.0.1"]
        assert (await set_hook(w, p, f"http://hooks.counted.test:{receiver.port}/seteli")).status_code == 200
        await notice_for(w, p)
        assert (await attempted(w, p))["status"] == "delivered"
        names.known["hooks.counted.test"] = ["10.9.8.7"]  # inside: refused, tried again after its back-off
        await notice_for(w, p)
        assert (await attempted(w, p))["log"][0]["error"] == "webhook_address_not_public"
    after = await counted()
    assert after.get("delivered", 0) - before.get("delivered", 0) == 1
    assert after.get("retrying", 0) - before.get("retrying", 0) >= 1
