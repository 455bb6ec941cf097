"""Addresses and the prefixes that ban them (pure, no I/O).

A ban covers a prefix: ``(version, network, length)`` with ``version`` 4 or 6,
``network`` the integer of the first address with every bit past ``length``
zero, and ``length`` 0 to 32 (IPv4) or 0 to 128 (IPv6). A hit from an address bans
its covering prefix of the configured length (``/32`` and ``/64`` by default),
so one IPv6 customer's /64 is one ban however many of its addresses it uses.
An IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) is the IPv4 address: both
spellings of one client are one ban.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import NamedTuple

IPV4 = 4
IPV6 = 6
FULL_LENGTH = {IPV4: 32, IPV6: 128}
DEFAULT_IPV4_LENGTH = 32
DEFAULT_IPV6_LENGTH = 64
_IPV4_MAPPED = 0xFFFF << 32
_IPV4_MAPPED_MASK = ((1 << 96) - 1) << 32


class Prefix(NamedTuple):
    """A block of addresses: the covering prefix of a ban, or a range an admin bans."""

    version: int
    network: int
    length: int


def mask(version: int, length: int) -> int:
    """The netmask of ``length`` bits, as an integer of the family's width."""
    width = FULL_LENGTH[version]
    return ((1 << length) - 1) << (width - length)


@lru_cache(maxsize=65536)
def parse_address(text: str) -> tuple[int, int] | None:
    """``(version, integer)`` of an address written as text, or None if it is none.

    Accepts ``[v6]`` brackets and drops a zone index; an IPv4-mapped IPv6
    address is its IPv4 address. Cached: the same clients ask again and again.
    """
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    candidate = candidate.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    number = int(address)
    if address.version == IPV6 and number & _IPV4_MAPPED_MASK == _IPV4_MAPPED:
        return IPV4, number & 0xFFFFFFFF
    return address.version, number


def covering(version: int, number: int, length: int) -> Prefix:
    """The prefix of ``length`` bits that holds the address ``number``."""
    return Prefix(version, number & mask(version, length), length)


def covering_prefix(text: str, ipv4_length: int, ipv6_length: int) -> Prefix | None:
    """The prefix a hit from the address ``text`` bans, or None if ``text`` is no address."""
    parsed = parse_address(text)
    if parsed is None:
        return None
    version, number = parsed
    return covering(version, number, ipv4_length if version == IPV4 else ipv6_length)


def parse_prefix(text: str) -> Prefix | None:
    """The prefix written as ``ADDRESS`` or ``NETWORK/LENGTH``, or None if it is neither.

    Bits past the length are cleared (``10.1.2.3/8`` is ``10.0.0.0/8``); an
    IPv4-mapped IPv6 prefix of 96 bits or more is its IPv4 prefix.
    """
    address_text, slash, length_text = text.strip().partition("/")
    parsed = parse_address(address_text)
    if parsed is None:
        return None
    version, number = parsed
    if not slash:
        return Prefix(version, number, FULL_LENGTH[version])
    if not length_text.isascii() or not length_text.isdigit() or len(length_text) > 3:
        return None
    length = int(length_text)
    if version == IPV4 and ":" in address_text:
        # ::ffff:a.b.c.d/LEN: the length counts IPv6 bits.
        if length < 96:
            return None
        length -= 96
    if length > FULL_LENGTH[version]:
        return None
    return covering(version, number, length)


def prefix_text(prefix: Prefix) -> str:
    """Canonical text: the address alone for a full-length prefix, else ``NETWORK/LENGTH``."""
    version, network, length = prefix
    address = ipaddress.IPv4Address(network) if version == IPV4 else ipaddress.IPv6Address(network)
    if length == FULL_LENGTH[version]:
        return str(address)
    return f"{address}/{length}"


def holds(prefix: Prefix, version: int, number: int) -> bool:
    """Whether the address ``(version, number)`` lies in ``prefix``."""
    return prefix.version == version and number & mask(version, prefix.length) == prefix.network
