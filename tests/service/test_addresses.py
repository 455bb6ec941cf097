"""Address keys, CIDR sets and the client address behind trusted proxies (pure)."""

from __future__ import annotations

import pytest

from blacklist_service.address_keys import NetworkSet, address_key, key_text, normalise
from blacklist_service.http.client_address import UNKNOWN_CLIENT, client_address


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("2001:DB8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        (" 10.0.0.1 ", "10.0.0.1"),
    ],
)
def test_addresses_have_one_canonical_form(raw: str, canonical: str) -> None:
    assert normalise(raw) == canonical
    key = address_key(raw)
    assert key is not None
    assert key_text(key) == canonical


@pytest.mark.parametrize("raw", ["", "abc", "1.2.3", "1.2.3.4.5", "::g", "1.2.3.4/32"])
def test_non_addresses_have_no_key(raw: str) -> None:
    assert address_key(raw) is None


def test_ipv4_and_ipv6_keys_do_not_collide() -> None:
    assert address_key("0.0.0.1") != address_key("::1")


def test_network_set_matches_ipv4_and_ipv6_blocks() -> None:
    networks = NetworkSet.parse("10.0.0.0/8, 192.168.1.7 2001:db8::/32")
    assert address_key("10.200.3.4") in networks
    assert address_key("::ffff:10.1.1.1") in networks
    assert address_key("192.168.1.7") in networks
    assert address_key("192.168.1.8") not in networks
    assert address_key("2001:db8:ffff::1") in networks
    assert address_key("2001:db9::1") not in networks
    assert address_key("11.0.0.1") not in networks


def test_empty_network_set_matches_nothing() -> None:
    networks = NetworkSet.parse("")
    assert not networks
    assert address_key("127.0.0.1") not in networks


def test_a_bad_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="not-a-cidr"):
        NetworkSet.parse("10.0.0.0/8,not-a-cidr")


def test_catch_all_blocks() -> None:
    assert address_key("8.8.8.8") in NetworkSet.parse("0.0.0.0/0")
    assert address_key("2001:db8::1") in NetworkSet.parse("::/0")


PROXIES = NetworkSet.parse("10.0.0.0/8")


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        # No trusted proxies: the header is ignored, whoever sends it.
        ("10.0.0.1", "6.6.6.6", NetworkSet(), "10.0.0.1"),
        # An untrusted peer cannot claim another address.
        ("5.5.5.5", "6.6.6.6", PROXIES, "5.5.5.5"),
        # A trusted proxy reports its client.
        ("10.0.0.1", "6.6.6.6", PROXIES, "6.6.6.6"),
        # A forged leftmost entry is not believed past the first untrusted hop.
        ("10.0.0.1", "1.1.1.1, 6.6.6.6", PROXIES, "6.6.6.6"),
        # A chain of trusted proxies is walked.
        ("10.0.0.1", "6.6.6.6, 10.0.0.2", PROXIES, "6.6.6.6"),
        # Garbage reported by a trusted proxy: the client is unknown, never the proxy itself.
        ("10.0.0.1", "6.6.6.6, junk", PROXIES, UNKNOWN_CLIENT),
        ("10.0.0.1", "unknown", PROXIES, UNKNOWN_CLIENT),
        ("10.0.0.1", "", PROXIES, "10.0.0.1"),
        # Ports, bracketed IPv6 and quoted entries, as proxies write them.
        ("10.0.0.1", "6.6.6.6:5678", PROXIES, "6.6.6.6"),
        ("10.0.0.1", "[2001:db8::7]:443", PROXIES, "2001:db8::7"),
        ("10.0.0.1", '"[2001:db8::7]"', PROXIES, "2001:db8::7"),
        ("10.0.0.1", "2001:db8::7", PROXIES, "2001:db8::7"),
        ("10.0.0.1", "6.6.6.6:5678, 10.0.0.2:80", PROXIES, "6.6.6.6"),
        ("10.0.0.1", None, PROXIES, "10.0.0.1"),
        ("::ffff:10.0.0.1", "2001:db8::5", PROXIES, "2001:db8::5"),
    ],
)
def test_client_address(
    peer: str, forwarded: str | None, trusted: NetworkSet, expected: str
) -> None:
    assert client_address(peer, forwarded, trusted) == expected
