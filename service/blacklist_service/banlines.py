"""The lines of a ban-list ConfigMap and what they change in the replica's ban store.

The operator writes one ban per line of a shard's ``addresses``: ``ADDRESS``
(no expiry) or ``ADDRESS EXPIRY``, EXPIRY an integer Unix time in seconds when
the ban ends; and on every shard the annotation ``blacklist.dev/lifts-seen``,
the database time in Unix milliseconds of the latest lift it had applied when
it wrote the shard (docs/CONTRACTS.md). Pure functions: no I/O.

A line only ever bans. An address that this replica holds as lifted at ``t``
is banned again only if the shard's lifts-seen is ``>= t``: the operator had
seen the lift and still bans it, so a later hit did. Otherwise the line
predates the lift and is skipped. A line that has expired already changes
nothing (the store may hold a later ban from a later hit); one whose expiry
differs from the store's replaces it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from blacklist_service.addresses import address_key
from blacklist_service.banstore import FOREVER, lifted_at

LIFTS_SEEN_ANNOTATION = "blacklist.dev/lifts-seen"


@dataclass(frozen=True)
class ParsedShard:
    """The bans of one shard, its lifts-seen time, and what could not be read."""

    bans: list[tuple[int, int]] = field(default_factory=list)
    lifts_seen: int = 0
    bad_lines: list[str] = field(default_factory=list)


def parse_line(line: str) -> tuple[int, int] | None:
    """``(key, expiry)`` of one line (expiry ``0``: none), or None if it is not a ban."""
    parts = line.split()
    if not parts or len(parts) > 2:
        return None
    key = address_key(parts[0])
    if key is None:
        return None
    if len(parts) == 1:
        return key, FOREVER
    expiry = parts[1]
    if not expiry.isascii() or not expiry.isdigit() or int(expiry) <= 0:
        return None
    return key, int(expiry)


def parse_shard(config_map: Mapping[str, Any]) -> ParsedShard:
    """The bans and the lifts-seen time of a shard ConfigMap."""
    data = config_map.get("data") or {}
    bans: list[tuple[int, int]] = []
    bad: list[str] = []
    for line in str(data.get("addresses") or "").splitlines():
        if not line.strip():
            continue
        parsed = parse_line(line)
        if parsed is None:
            bad.append(line)
        else:
            bans.append(parsed)
    annotations = (config_map.get("metadata") or {}).get("annotations") or {}
    seen_text = str(annotations.get(LIFTS_SEEN_ANNOTATION) or "0").strip()
    try:
        lifts_seen = int(seen_text)
    except ValueError:
        bad.append(f"{LIFTS_SEEN_ANNOTATION}: {seen_text}")
        lifts_seen = 0
    return ParsedShard(bans, lifts_seen, bad)


def bans_to_write(
    shard: ParsedShard, state: Callable[[int], int | None], now: float
) -> list[tuple[int, int]]:
    """The ``(key, expiry)`` records a shard adds to a store whose latest values ``state`` gives."""
    records: list[tuple[int, int]] = []
    for key, expiry in shard.bans:
        if expiry != FOREVER and expiry <= now:
            continue
        current = state(key)
        lifted = lifted_at(current)
        if lifted is not None:
            if shard.lifts_seen >= lifted:
                records.append((key, expiry))
        elif current != expiry:
            records.append((key, expiry))
    return records
