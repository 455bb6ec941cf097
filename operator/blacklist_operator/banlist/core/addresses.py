"""Addresses as integer keys, as the ledger reader and the allowlist use them (pure, no I/O).

An IPv4 address is its 32-bit number; an IPv6 address has ``IPV6_FLAG`` set on
top of its 128-bit number; ``::ffff:1.2.3.4`` is ``1.2.3.4``. How a ban is
written is :mod:`blacklist_contract`'s (docs/CONTRACTS.md).
"""

from __future__ import annotations

import ipaddress
import socket

# Keys: an IPv4 address is its 32-bit number; an IPv6 address has this bit set on top.
IPV6_FLAG = 1 << 128


def address_key(text: str) -> int | None:
    """The key of an address in canonical form (``::ffff:1.2.3.4`` is ``1.2.3.4``), or None."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return int(address.ipv4_mapped)
        return IPV6_FLAG | int(address)
    return int(address)


def key_text(key: int) -> str:
    """The canonical text of a key."""
    if key & IPV6_FLAG:
        return str(ipaddress.IPv6Address(key & (IPV6_FLAG - 1)))
    return socket.inet_ntoa(key.to_bytes(4, "big"))
