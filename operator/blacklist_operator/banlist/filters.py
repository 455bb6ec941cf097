"""Which ledger hits make a ban: the allowlist, the ban duration, and their digest (pure).

The digest of the allowlist and duration is stored with the ban list, so a
changed filter is noticed after a restart and the list is rebuilt.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math

from blacklist_operator.banlist.addresses import IPV6_FLAG
from blacklist_operator.model import IPNetwork

KeyRange = tuple[int, int]


def filter_key(networks: tuple[IPNetwork, ...], ban_duration: int | None = None) -> str:
    """A short digest of the allowlist and ban duration the stored list was built with."""
    text = ",".join(sorted(str(network) for network in networks))
    if ban_duration is not None:
        text += f";{ban_duration}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def key_ranges(networks: tuple[IPNetwork, ...]) -> tuple[KeyRange, ...]:
    """The allowlist as ranges of address keys; ``::ffff:a.b.c.d/n`` covers IPv4 addresses too."""
    ranges: list[KeyRange] = []
    mapped = ipaddress.ip_network("::ffff:0:0/96")
    for network in networks:
        first, last = int(network.network_address), int(network.broadcast_address)
        if isinstance(network, ipaddress.IPv6Network):
            if network.subnet_of(mapped):  # type: ignore[arg-type]
                ranges.append((first & 0xFFFFFFFF, last & 0xFFFFFFFF))
            ranges.append((IPV6_FLAG | first, IPV6_FLAG | last))
        else:
            ranges.append((first, last))
    return tuple(ranges)


def allowed(key: int, ranges: tuple[KeyRange, ...]) -> bool:
    """Whether the address ``key`` is in the allowlist (and so never banned)."""
    return any(first <= key <= last for first, last in ranges)


def expiry_of(hit_ms: int, ban_duration: int | None) -> int:
    """When a ban from a hit at ``hit_ms`` ends, in Unix seconds (0: never)."""
    return 0 if ban_duration is None else math.ceil(hit_ms / 1000) + ban_duration
