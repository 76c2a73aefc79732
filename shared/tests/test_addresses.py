"""Whose address a request is: X-Forwarded-For believed only from trusted proxies, and only as far
back as the chain of trusted hops goes."""
from __future__ import annotations

import pytest

from seteli_shared.addresses import TrustedProxies, address_group, parse_address


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says():
    nobody = TrustedProxies.parse("")
    assert nobody.client("192.0.2.7", ["198.51.100.1"]) == "192.0.2.7"
    assert nobody.client(None, ["198.51.100.1"]) == "unknown"


def test_a_trusted_proxy_names_the_client_and_an_untrusted_one_cannot():
    proxies = TrustedProxies.parse("127.0.0.1/32, 10.0.0.0/8")
    assert proxies.client("127.0.0.1", ["198.51.100.1"]) == "198.51.100.1"
    assert proxies.client("192.0.2.9", ["198.51.100.1"]) == "192.0.2.9"
    # the nearest untrusted hop: what the client wrote itself before the proxies is not believed
    assert proxies.client("127.0.0.1", ["203.0.113.5, 198.51.100.1, 10.1.2.3"]) == "198.51.100.1"
    assert proxies.client("127.0.0.1", ["203.0.113.5", "198.51.100.1"]) == "198.51.100.1"  # repeated header
    # a hop that is not an address ends the chain at the proxy that wrote it
    assert proxies.client("127.0.0.1", ["198.51.100.1, nonsense"]) == "127.0.0.1"
    assert proxies.client("127.0.0.1", ["10.0.0.2, 10.0.0.3"]) == "10.0.0.2"  # all trusted: the farthest
    assert proxies.client("127.0.0.1", []) == "127.0.0.1"


def test_addresses_as_proxies_write_them():
    assert str(parse_address("192.0.2.1:443")) == "192.0.2.1"
    assert str(parse_address("[2001:db8::1]:443")) == "2001:db8::1"
    assert str(parse_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert parse_address("unknown") is None and parse_address("") is None
    v6 = TrustedProxies.parse("2001:db8::/32")
    assert v6.client("2001:db8::5", ["192.0.2.44"]) == "192.0.2.44"
    assert not v6.trusts(parse_address("192.0.2.1"))


def test_an_ipv6_host_is_counted_by_its_64_and_a_typo_in_the_setting_stops_the_start():
    assert address_group("2001:db8:1:2:aaaa::1") == address_group("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_group("192.0.2.1") == "192.0.2.1"
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        TrustedProxies.parse("127.0.0.1, 10.0.0.300")
