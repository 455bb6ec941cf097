"""The operator's head ConfigMap and what its lines change in the replica's ban store (pure).

The head ``N-banlist`` (:mod:`blacklist_contract.wire`) names the snapshot
generation (``data.snapshot``, ``"0"`` for none) and how many parts carry it
(``data.parts``), and lists the bans not yet in the snapshot as text lines
(``data.addresses``, :mod:`blacklist_contract.lines`). Its annotation
``blacklist.dev/lifts-seen`` is the database time, in Unix milliseconds, of
the latest lift the operator had applied when it wrote the head
(docs/CONTRACTS.md).

What a head line changes (:func:`head_records`):

* a prefix this replica holds as lifted at ``t`` is banned again only if the
  head's lifts-seen is ``>= t`` (the operator saw the lift and still bans it:
  a later hit did); otherwise the line predates the lift and is skipped;
* a ban this replica made itself becomes the operator's (the list has now
  included it once, so from now on the list decides);
* a line that has expired changes nothing; one whose expiry differs from the
  store's replaces it.

A prefix the store holds as listed by the operator that the head no longer
lists (and that no new snapshot took over: that changes the generation) was
dropped by the operator, a ledger row deleted or a ban ended there: it is
removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from blacklist_contract.lines import FOREVER, Ban, parse_lines
from blacklist_contract.prefixes import Prefix
from blacklist_contract.wire import LIFTS_SEEN_ANNOTATION, SNAPSHOT_ANNOTATION
from blacklist_service.bans.records import LISTED, REMOVED
from blacklist_service.bans.values import lifted_at

NO_SNAPSHOT = "0"


@dataclass(frozen=True)
class Head:
    """What the head ConfigMap says: snapshot generation and parts, its bans, lifts-seen.

    Read against the head applied before it (same generation and lifts-seen),
    ``bans`` holds only the lines that are new and ``dropped`` the prefixes of
    the lines that are gone; read whole, ``dropped`` is None: every listed
    prefix not in ``bans`` is gone.
    """

    snapshot: str = NO_SNAPSHOT
    parts: int = 0
    bans: list[Ban] = field(default_factory=list)
    lifts_seen: int = 0
    bad_lines: list[str] = field(default_factory=list)
    lines: frozenset[str] = frozenset()
    dropped: list[Prefix] | None = None


def _annotation(config_map: Mapping[str, Any], name: str) -> str:
    annotations = (config_map.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(name) or "").strip()


def lifts_seen(config_map: Mapping[str, Any]) -> int | None:
    """The ``blacklist.dev/lifts-seen`` of a ConfigMap (``0`` if absent), None if unreadable."""
    text = _annotation(config_map, LIFTS_SEEN_ANNOTATION) or "0"
    return int(text) if text.isascii() and text.isdigit() else None


def part_generation(config_map: Mapping[str, Any]) -> str:
    """The snapshot generation a part ConfigMap carries (its annotation)."""
    return _annotation(config_map, SNAPSHOT_ANNOTATION)


def parse_head(config_map: Mapping[str, Any], previous: Head | None = None) -> Head:
    """The head's generation, parts, bans and lifts-seen, and what could not be read.

    With ``previous``, the head applied last, of the same generation and
    lifts-seen, only the lines that changed are parsed: a head of tens of
    thousands of lines rewritten for each batch of new bans costs the set
    difference of its lines, not a parse and a store lookup per line.
    """
    data = config_map.get("data") or {}
    text = str(data.get("addresses") or "")
    lines = frozenset(line.strip() for line in text.splitlines() if line.strip())
    bad: list[str] = []
    seen = lifts_seen(config_map)
    if seen is None:
        bad.append(f"{LIFTS_SEEN_ANNOTATION}: {_annotation(config_map, LIFTS_SEEN_ANNOTATION)}")
        seen = 0
    generation = str(data.get("snapshot") or NO_SNAPSHOT).strip()
    parts_text = str(data.get("parts") or "0").strip()
    if parts_text.isascii() and parts_text.isdigit():
        parts = int(parts_text)
    else:
        bad.append(f"parts: {parts_text}")
        parts = 0
    if generation == NO_SNAPSHOT:
        parts = 0
    dropped: list[Prefix] | None = None
    if previous is not None and (previous.snapshot, previous.lifts_seen) == (generation, seen):
        bans, bad_lines = parse_lines("\n".join(sorted(lines - previous.lines)))
        gone, _ = parse_lines("\n".join(sorted(previous.lines - lines)))
        dropped = [prefix for prefix, _ in gone]
    else:
        bans, bad_lines = parse_lines(text)
    return Head(generation, parts, bans, seen, bad_lines + bad, lines, dropped)


def head_records(
    head: Head,
    state: Callable[[Prefix], tuple[int | None, bool]],
    listed: Iterable[Prefix],
    now: float,
) -> list[tuple[int, Prefix, int]]:
    """The ``(kind, prefix, value)`` records the head adds to a store.

    ``state`` gives a prefix's latest value in the store and whether it is a
    ban this replica made; ``listed`` the prefixes the store's log holds as
    listed by the operator, of which those the head no longer lists (all not
    in its lines, or, read against the previous head, those it dropped) are
    removed.
    """
    records: dict[Prefix, tuple[int, Prefix, int]] = {}
    for prefix, expiry in head.bans:
        if expiry != FOREVER and expiry <= now:
            continue
        current, own = state(prefix)
        lifted = lifted_at(current)
        if lifted is not None:
            if head.lifts_seen >= lifted:
                records[prefix] = (LISTED, prefix, expiry)
        elif own or current != expiry:
            records[prefix] = (LISTED, prefix, expiry)
    held = {prefix for prefix, _ in head.bans}
    candidates = set(listed)
    if head.dropped is not None:
        candidates &= set(head.dropped)
    for prefix in sorted(candidates):
        if prefix not in held:
            records[prefix] = (REMOVED, prefix, 0)
    return list(records.values())
