"""Where a webhook may point: public addresses only, whatever form an address takes."""
import pytest


NOT_PUBLIC = [
    "127.0.0.1", "127.1.2.3", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "255.255.255.255", "240.0.0.1", "224.0.0.1", "239.255.255.250", "192.0.2.1", "198.18.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "ff0e::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:8.8.8.8", "::7f00:1",  # IPv4-mapped, -compatible
    "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:a00:1::1",  # 6to4 of 127.0.0.1, 169.254.169.254, 10.0.0.1
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1",  # NAT64 of private ones, local-use NAT64
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "2a00:1450:4010:c0e::65", "2002:808:808::1",
          "64:ff9b::808:808"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_loopback_private_link_local_multicast_reserved_and_their_ipv6_forms_are_not_public(address):  # noqa: ANN001
    import ipaddress

    from payments.notices.egress import Policy, is_public

    assert not is_public(ipaddress.ip_address(address))
    development = Policy(allow_http=True, allow_loopback=True)
    assert development.allows(ipaddress.ip_address(address)) == (address in ("127.0.0.1", "127.1.2.3", "::1"))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address):  # noqa: ANN001
    import ipaddress

    from payments.notices.egress import is_public

    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("url, resolves_to, reason", [
    ("http://hooks.example.fi/n", ["93.184.216.34"], "webhook_not_https"),
    ("ftp://hooks.example.fi/n", ["93.184.216.34"], "webhook_not_https"),
    ("https://hooks.example.fi/n", [], "webhook_address_unresolvable"),
    ("https://hooks.example.fi/n", ["93.184.216.34", "10.0.0.7"], "webhook_address_not_public"),
    ("https://hooks.example.fi/n", ["::ffff:10.0.0.7"], "webhook_address_not_public"),
    ("https://hooks.example.fi/n", ["93.184.216.34", "2606:4700::1111"], None),
])
async def test_every_address_a_webhooks_host_resolves_to_must_be_public(url, resolves_to, reason):  # noqa: ANN001
    from payments.notices.egress import Policy, WebhookRefused, check

    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.fi", 443 if url.startswith("https") else 80)
        return resolves_to

    if reason is None:
        target = await check(url, Policy(), resolver)
        assert (target.address, target.host) == ("93.184.216.34", "hooks.example.fi")
        return
    with pytest.raises(WebhookRefused) as refused:
        await check(url, Policy(), resolver)
    assert refused.value.reason == reason
