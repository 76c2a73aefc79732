"""The address a request really comes from, behind proxies this deployment trusts.

A server sees its TCP peer. Behind a reverse proxy, or when the portal calls the vouchers service on
a browser's behalf, the peer is the proxy, and the proxy says whose request it passes on in
``X-Forwarded-For`` (one address per hop, the nearest hop last). Anyone can write that header, so it
is believed only from a peer in the configured trusted proxies (``TRUSTED_PROXIES``: addresses or
CIDR networks, comma-separated; default none), and only as far back as the chain of trusted hops goes:
reading from the right, the first address that is not a trusted proxy is the client. A value that is
no address ends the chain at the hop that wrote it. Uvicorn's own proxy-header handling (which trusts
127.0.0.1 by default) is turned off where the services and the portal are served: this is the one place
that decides.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address, ip_network

Address = IPv4Address | IPv6Address

#: the header the portal (and any reverse proxy) writes, and the one read here
FORWARDED_FOR = "X-Forwarded-For"


def parse_address(text: str) -> Address | None:
    """An address as proxies write it (``192.0.2.1``, ``192.0.2.1:443``, ``2001:db8::1``,
    ``[2001:db8::1]:443``), IPv4-mapped IPv6 as IPv4; None for anything else."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class TrustedProxies:
    """The networks whose ``X-Forwarded-For`` is believed."""

    networks: tuple = ()

    @classmethod
    def parse(cls, text: str) -> "TrustedProxies":
        """From ``TRUSTED_PROXIES`` (``127.0.0.1/32, 10.0.0.0/8``; a bare address is one host).
        Raises ``ValueError`` naming the entry that is no address or network."""
        networks = []
        for entry in (e.strip() for e in text.replace(";", ",").split(",")):
            if not entry:
                continue
            try:
                networks.append(ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"TRUSTED_PROXIES: {entry!r} is not an address or a network") from None
        return cls(tuple(networks))

    def trusts(self, address: Address | None) -> bool:
        return address is not None and any(address in n for n in self.networks if n.version == address.version)

    def client(self, peer: str | None, forwarded_for: list[str]) -> str:
        """The client's address: the peer's own unless the peer is trusted; then the nearest address in
        ``forwarded_for`` (the header's values, in order) that is not itself a trusted proxy."""
        hop = parse_address(peer or "")
        if hop is None:
            return peer or "unknown"
        if not self.trusts(hop):
            return str(hop)
        chain = [part for value in forwarded_for for part in value.split(",") if part.strip()]
        for entry in reversed(chain):
            address = parse_address(entry)
            if address is None:  # not an address: nothing further back can be believed
                return str(hop)
            hop = address
            if not self.trusts(hop):
                return str(hop)
        return str(hop)  # every hop trusted: the farthest one is the client


def address_group(address: str) -> str:
    """What one party controls: an IPv4 address, or an IPv6 /64 (a single host is commonly given a
    whole /64 and can change its address within it at will)."""
    parsed = parse_address(address)
    if isinstance(parsed, IPv6Address):
        return str(IPv6Network(f"{parsed}/64", strict=False))
    return str(parsed) if parsed is not None else address


def client_address(request, proxies: TrustedProxies) -> str:  # noqa: ANN001  (a Starlette request)
    """The address of the client of ``request`` (see ``TrustedProxies.client``)."""
    peer = request.client.host if request.client else None
    return proxies.client(peer, request.headers.getlist(FORWARDED_FOR))
