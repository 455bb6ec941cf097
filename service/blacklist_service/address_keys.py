"""IP addresses as integer keys, and sets of CIDR blocks over those keys (pure, no I/O).

Every address, IPv4 or IPv6, becomes one integer in the IPv6 space (IPv4 as
its IPv4-mapped form ``::ffff:a.b.c.d``), so a ban list is a plain ``set`` of
ints with O(1) membership and ``1.2.3.4`` and ``::ffff:1.2.3.4`` are the same
client.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

IPV4_MAPPED_PREFIX = 0xFFFF << 32
IPV4_MAPPED_MASK = ((1 << 96) - 1) << 32


@lru_cache(maxsize=65536)
def address_key(text: str) -> int | None:
    """The integer key of an address written as text, or None if it is not an address.

    Cached: the same few clients ask again and again, and parsing costs more
    than the whole ban check.
    """
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    candidate = candidate.split("%", 1)[0]  # an IPv6 zone index names an interface, not a host
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if address.version == 4:
        return IPV4_MAPPED_PREFIX | int(address)
    return int(address)


def key_text(key: int) -> str:
    """The canonical text of a key: dotted IPv4 for mapped addresses, compressed IPv6 otherwise."""
    if key & IPV4_MAPPED_MASK == IPV4_MAPPED_PREFIX:
        return str(ipaddress.IPv4Address(key & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address(key))


@lru_cache(maxsize=65536)
def normalise(text: str) -> str | None:
    """The canonical text of an address, or None if ``text`` is not one."""
    key = address_key(text)
    return None if key is None else key_text(key)


@dataclass(frozen=True)
class NetworkSet:
    """A set of CIDR blocks (IPv4 and IPv6) as (first key, mask) pairs in the IPv6 key space."""

    blocks: tuple[tuple[int, int], ...] = ()
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> NetworkSet:
        """Parse comma- or space-separated addresses and CIDRs; raise ValueError on a bad one."""
        blocks: list[tuple[int, int]] = []
        for item in text.replace(",", " ").split():
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR block") from None
            if network.version == 4:
                prefix = 96 + network.prefixlen
                first = IPV4_MAPPED_PREFIX | int(network.network_address)
            else:
                prefix = network.prefixlen
                first = int(network.network_address)
            mask = ((1 << prefix) - 1) << (128 - prefix) if prefix else 0
            blocks.append((first & mask, mask))
        return cls(tuple(blocks), ",".join(text.replace(",", " ").split()))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and any(key & mask == first for first, mask in self.blocks)

    def __bool__(self) -> bool:
        return bool(self.blocks)
