"""Where payments may send a provider's webhook notices: the public internet, and nothing else.

A provider chooses its webhook's URL, and payments then POSTs signed requests to it from inside the
operator's network: a URL naming ``169.254.169.254`` (a cloud's metadata service), ``127.0.0.1`` or a
private address would turn the service into a way into that network. So:

- the URL must be ``https`` (``WEBHOOK_ALLOW_HTTP``: plain http too, development and test only);
- its host is resolved, and every address it resolves to must be public (``is_public``): not loopback,
  private, shared (100.64/10), link-local, multicast, unspecified, reserved or documentation, nor an IPv6
  address that carries such an IPv4 address inside it (IPv4-mapped, 6to4, NAT64) or is site-local;
  ``WEBHOOK_ALLOW_LOOPBACK`` lets this machine's own loopback addresses through (development and test only:
  the tests' receivers), never a private or link-local one;
- this is checked when the URL is set (422 ``webhook_not_https``, ``webhook_address_not_public``,
  ``webhook_address_unresolvable``) and again at every delivery, which then connects to the very address
  it checked (``post``: the host is resolved once, the connection made to that address with the URL's
  name as ``Host`` and as TLS server name, so the certificate is still verified for the name): a name that
  resolves to a public address when checked and to a private one a moment later (DNS rebinding) gets nothing;
- redirects are not followed (a 3xx is a failed delivery), the connection and the whole exchange have
  short time limits, and at most ``WEBHOOK_MAX_RESPONSE_BYTES`` of the answer is read.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Awaitable, Callable

import httpx

from seteli_shared.errors import DomainError
from seteli_shared.logging import get_logger

log = get_logger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (host, port) -> the addresses the host resolves to; ``system_resolver`` unless a test gives its own
Resolver = Callable[[str, int], Awaitable[list[str]]]

#: IPv6 prefixes whose addresses carry an IPv4 address in their last 32 bits: the NAT64 well-known prefix
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: NAT64 for local use (RFC 8215): a translator inside some network, never a public address
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


class WebhookRefused(DomainError):
    """A webhook URL payments will not send to (422 when it is set; a failed attempt at a delivery)."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to, where it carries one: IPv4-mapped (``::ffff:a.b.c.d``),
    6to4 (``2002:ab:cd::``), NAT64 (``64:ff9b::a.b.c.d``), Teredo (its server and, obfuscated, its client:
    the client's is returned)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.teredo is not None:
        return address.teredo[1]
    return None


def is_public(address: IPAddress) -> bool:
    """An address on the public internet. ``ipaddress``' ``is_global`` is the base; it still calls some
    addresses global that are not (multicast ``224.0.0.0/4`` and ``ff00::/8``, the IPv4-compatible
    ``::a.b.c.d``, the deprecated site-local ``fec0::/10``), and it judges 6to4 and NAT64 addresses by
    their IPv6 prefix, not by the IPv4 address they lead to: those are checked here too. IPv4-mapped and
    IPv4-compatible addresses are refused outright: no public host is published under them."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None or int(address) >> 32 == 0 or address.scope_id:
            return False
        if address.is_site_local or address in NAT64_LOCAL:
            return False
        if address in NAT64:  # the translator connects to the IPv4 address inside
            return is_public(embedded_ipv4(address))
        inner = embedded_ipv4(address)  # 6to4, Teredo
        if inner is not None and not is_public(inner):
            return False
    if address.is_multicast or address.is_unspecified or address.is_loopback or address.is_link_local:
        return False
    if address.is_private or address.is_reserved:
        return False
    return address.is_global


@dataclass(frozen=True)
class Policy:
    """What the settings allow (``PaymentsSettings.webhook_*``)."""

    allow_http: bool = False
    allow_loopback: bool = False
    connect_timeout: float = 3.0
    total_timeout: float = 10.0
    max_response_bytes: int = 64 * 1024

    @classmethod
    def of(cls, settings) -> "Policy":  # noqa: ANN001
        return cls(settings.webhook_allow_http, settings.webhook_allow_loopback,
                   settings.webhook_connect_timeout_seconds, settings.webhook_timeout_seconds,
                   settings.webhook_max_response_bytes)

    def allows(self, address: IPAddress) -> bool:
        return is_public(address) or (self.allow_loopback and address.is_loopback)


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system's resolver gives for ``host`` (a name or an address written out)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class Target:
    """A webhook URL and the one address it was checked to resolve to: what a delivery connects to."""

    url: httpx.URL
    address: str

    @property
    def host(self) -> str:
        """The URL's host as sent on the wire (IDNA), for ``Host`` and the TLS server name."""
        return self.url.raw_host.decode("ascii")


async def check(url: str, policy: Policy, resolve: Resolver | None = None) -> Target:
    """The URL's target when payments may send to it, else ``WebhookRefused``. Every address the host
    resolves to must be allowed (a name that also leads into a private network is refused as a whole)."""
    parsed = _parse(url)
    if parsed.scheme != "https" and not (policy.allow_http and parsed.scheme == "http"):
        raise WebhookRefused("webhook_not_https", "a webhook URL must use https")
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        found = await asyncio.wait_for((resolve or system_resolver)(host, port), policy.connect_timeout)
        addresses = [ipaddress.ip_address(a) for a in found]
    except (OSError, UnicodeError, ValueError, asyncio.TimeoutError):
        addresses = []
    if not addresses:
        raise WebhookRefused("webhook_address_unresolvable", "the webhook's host does not resolve to an address")
    if not all(policy.allows(a) for a in addresses):
        raise WebhookRefused("webhook_address_not_public", "a webhook must be at a public internet address: this "
                       "host is, or resolves to, a loopback, private, link-local, multicast or reserved one")
    return Target(parsed, str(addresses[0]))


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, UnicodeError):
        raise WebhookRefused("webhook_url_invalid", "the webhook URL cannot be read") from None
    if not parsed.raw_host or parsed.scheme not in ("http", "https"):
        raise WebhookRefused("webhook_not_https", "a webhook URL must use https")
    return parsed


@dataclass(frozen=True)
class Answer:
    status_code: int
    cut: bool  # the answer was longer than ``max_response_bytes``: the rest was not read


async def post(client: httpx.AsyncClient, target: Target, body: bytes, headers: dict[str, str],
               policy: Policy) -> Answer:
    """POST ``body`` to the checked address itself, the URL's name as ``Host`` and TLS server name (the
    certificate is verified for it). No redirect is followed; the whole exchange is bounded by
    ``total_timeout`` (a receiver that trickles its answer is cut off too), and at most
    ``max_response_bytes`` of the answer are read."""
    url = target.url.copy_with(host=target.address)
    headers = {**headers, "Host": target.url.netloc.decode("ascii")}
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    timeout = httpx.Timeout(policy.total_timeout, connect=policy.connect_timeout)
    read, cut = 0, False
    async with asyncio.timeout(policy.total_timeout):
        async with client.stream("POST", url, content=body, headers=headers, extensions=extensions,
                                 timeout=timeout, follow_redirects=False) as response:
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > policy.max_response_bytes:
                    cut = True
                    break
    if cut:
        log.info("webhook.answer_cut", host=target.host, status_code=response.status_code,
                 read_bytes=policy.max_response_bytes)
    return Answer(response.status_code, cut)


def client(verify: object = True) -> httpx.AsyncClient:
    """The webhook worker's HTTP client: no proxies from the environment (a proxy would connect to a
    name of its own choosing), no redirects, and no connection kept for another request (two providers'
    names at one address must not share a connection checked for one of them)."""
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=verify,
                             limits=httpx.Limits(max_keepalive_connections=0))
