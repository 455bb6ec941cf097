"""Addresses as integer keys, and the text of a ban-list line (pure, no I/O).

An IPv4 address is its 32-bit number; an IPv6 address has ``IPV6_FLAG`` set on
top of its 128-bit number; ``::ffff:1.2.3.4`` is ``1.2.3.4``. A line of a shard
is ``ADDRESS`` or ``ADDRESS EXPIRY`` (Unix seconds; docs/CONTRACTS.md).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

# Keys: an IPv4 address is its 32-bit number; an IPv6 address has this bit set on top.
IPV6_FLAG = 1 << 128
# " 1767225600": the expiry column of a line (10 digits until the year 2286).
_EXPIRY_WIDTH = 11

Ban = tuple[int, int]  # (key, expiry: Unix seconds, 0 = never)


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


def combine(first: int, second: int) -> int:
    """The expiry of two bans of one address: never (0) wins, else the later one."""
    return 0 if first == 0 or second == 0 else max(first, second)


def line_size(key: int, expiry: int) -> int:
    """The bytes the line of a ban takes, its newline included."""
    return len(key_text(key)) + 1 + (_EXPIRY_WIDTH if expiry else 0)


def line(key: int, expiry: int) -> str:
    """The line of a ban: ``ADDRESS`` or ``ADDRESS EXPIRY``, with its newline."""
    return f"{key_text(key)} {expiry}\n" if expiry else f"{key_text(key)}\n"


def parse_text(text: str) -> Iterator[Ban]:
    """The bans in a shard's ``addresses`` text; lines that are not one are skipped."""
    for line in text.splitlines():
        fields = line.split()
        if not fields or len(fields) > 2:
            continue
        key = address_key(fields[0])
        if key is None:
            continue
        expiry = int(fields[1]) if len(fields) == 2 and fields[1].isdigit() else 0
        if len(fields) == 2 and not fields[1].isdigit():
            continue
        yield key, expiry
