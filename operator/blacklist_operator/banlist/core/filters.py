"""Which ledger hits make which ban: allowlist, duration, prefix lengths, and their digest (pure).

A hit from an allowed address (by its exact address) bans nothing; any other
bans its covering prefix of ``spec.banPrefixLengths``. The digest of the
allowlist, duration and prefix lengths is stored with the ban list, so a
changed filter is noticed after a restart and the list is rebuilt.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Callable

from blacklist_contract.prefixes import (
    DEFAULT_IPV4_LENGTH,
    DEFAULT_IPV6_LENGTH,
    FULL_LENGTH,
    IPV4,
    IPV6,
    Prefix,
    covering,
)
from blacklist_operator.banlist.core.addresses import IPV6_FLAG
from blacklist_operator.model.resource import IPNetwork

DEFAULT_LENGTHS = (DEFAULT_IPV4_LENGTH, DEFAULT_IPV6_LENGTH)

KeyRange = tuple[int, int]


def filter_key(
    networks: tuple[IPNetwork, ...],
    ban_duration: int | None = None,
    lengths: tuple[int, int] = DEFAULT_LENGTHS,
) -> str:
    """A short digest of the allowlist, ban duration and prefix lengths the list was built with."""
    text = ",".join(sorted(str(network) for network in networks))
    if ban_duration is not None:
        text += f";{ban_duration}"
    if lengths != DEFAULT_LENGTHS:
        # The defaults add nothing, so a list built before prefix bans keeps its digest.
        text += f";/{lengths[0]},/{lengths[1]}"
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


def ban_prefix(key: int, lengths: tuple[int, int]) -> Prefix:
    """The prefix a hit from the address ``key`` bans, with (IPv4, IPv6) prefix ``lengths``."""
    if key & IPV6_FLAG:
        return covering(IPV6, key & (IPV6_FLAG - 1), lengths[1])
    return covering(IPV4, key, lengths[0])


def lifted_ban(lift: Prefix, lengths: tuple[int, int]) -> Prefix | None:
    """The one ban a lift of ``lift`` lifts, or None when it spans several (a wide range).

    A lift of an address, or of a range inside one ban's prefix, lifts the ban
    that covers it; a range wider than a ban lifts every ban inside it.
    """
    length = lengths[0] if lift.version == IPV4 else lengths[1]
    if lift.length < length:
        return None
    return covering(lift.version, lift.network, length)


def overlaps(inner: Prefix, outer: Prefix) -> bool:
    """Whether ``inner`` lies inside ``outer`` (prefixes nest or are disjoint)."""
    if inner.version != outer.version or inner.length < outer.length:
        return False
    shift = FULL_LENGTH[outer.version] - outer.length
    return inner.network >> shift == outer.network >> shift


def stamp_of(hit_ms: int, ban_duration: int | None) -> int:
    """The stamp of a ban from a hit at ``hit_ms`` (:mod:`.packed`): expiry, or hit second."""
    return math.ceil(hit_ms / 1000) + (ban_duration or 0)


def ban_of(
    key: int,
    hit_ms: int,
    ranges: tuple[KeyRange, ...],
    lengths: tuple[int, int],
    ban_duration: int | None,
    lifted_at: Callable[[Prefix], int],
    now: int,
) -> tuple[Prefix, int] | None:
    """The ban (prefix, stamp) a hit makes, or None: allowed, lifted after it, or expired.

    ``lifted_at`` gives the time (Unix ms) of the latest lift that reaches a
    ban's prefix; ``now`` is in Unix seconds.
    """
    if allowed(key, ranges):
        return None
    prefix = ban_prefix(key, lengths)
    stamp = stamp_of(hit_ms, ban_duration)
    if hit_ms <= lifted_at(prefix) or (ban_duration is not None and stamp <= now):
        return None
    return prefix, stamp
