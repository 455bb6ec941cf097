"""When to write the head, when to compact, and how the snapshot splits into parts (pure, no I/O).

The ConfigMaps (:mod:`blacklist_contract.wire`) cost etcd what is written to
them, so the sync writes as little as the change needs:

* a new ban appends a line to the head ``N-banlist``; under load head writes
  are coalesced so that the head is rewritten at most ``HEAD_WRITE_RATE`` bytes
  a second (a lone ban at rest goes out at once: the previous write was long
  ago or small);
* a **compaction** rewrites the snapshot parts ``N-banlist-1`` … with a new
  generation and empties the head. It happens when the head outgrows
  ``HEAD_MAX_BYTES``, when the head holds most of a list of some size, when a
  rescan changed the list, when bans the parts hold were lifted (at most once
  per ``LIFTED_COMPACT_SECONDS``) or expired (after ``EXPIRED_COMPACT_SECONDS``),
  and when the list is over its capacity.

A flood of new bans therefore costs one head write of at most
``HEAD_MAX_BYTES`` per ``HEAD_MAX_BYTES / HEAD_WRITE_RATE`` seconds, plus one
snapshot per ``HEAD_MAX_BYTES`` of lines: per new ban about
``HEAD_WRITE_RATE / rate + snapshot bytes / (HEAD_MAX_BYTES / line bytes)``
(docs/operator.md, "Ban list writes").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from blacklist_contract.wire import MAX_PARTS, encode_part
from blacklist_operator.banlist.core.packed import Columns, PackedBanList

# The head's lines stay under this (the ConfigMap under 1 MiB with room to spare).
HEAD_MAX_BYTES = 256 * 1024
# Under load the head is rewritten no faster than this many bytes a second.
HEAD_WRITE_RATE = 512 * 1024
# A head holding more bans than the parts compacts once its lines reach this size.
HEAD_SHARE_MIN_BYTES = 32 * 1024
# A part is cut to about this many compressed bytes, and never more than the maximum.
PART_TARGET_BYTES = 768 * 1024
PART_MAX_BYTES = 900 * 1024
# Bans lifted from the parts leave them at once, but at most one compaction for lifts
# this often (a script lifting one address at a time must not rewrite the list each
# time; replicas read the lifts themselves at once). Expired ones leave this late
# (replicas stop enforcing at the expiry itself).
LIFTED_COMPACT_SECONDS = 2.0
EXPIRED_COMPACT_SECONDS = 300.0
# Sorted keys and expiries compress about as well at level 1 as at 6, three times faster.
ZLIB_LEVEL = 1
# The first guess of entries per part; later parts learn from the previous one.
_FIRST_PART_ENTRIES = 1 << 17


class SnapshotTooLargeError(Exception):
    """The list does not fit in the parts the contract allows (``MAX_PARTS - 1``)."""


@dataclass(frozen=True)
class Written:
    """What the ConfigMaps hold now, as far as the policy cares."""

    head_bytes: int
    head_count: int
    snapshot_count: int
    # monotonic seconds of the last compaction and of the last head write.
    compacted_at: float
    head_written_at: float
    # The bytes of the last head write (what sets the pace of the next one).
    last_head_bytes: int


@dataclass(frozen=True)
class Pending:
    """What memory holds that the ConfigMaps do not."""

    head_bytes: int
    head_count: int
    # The head changed since it was written.
    head_changed: bool
    # A merge in memory, a rescan or a drift: only a compaction writes it.
    snapshot_changed: bool
    # Bans held by the parts were lifted.
    lifted: bool
    # Whether bans held by the parts have expired (unix seconds compared by the caller).
    expired: bool
    over_capacity: bool


def compaction_reason(written: Written, pending: Pending, now: float) -> str | None:
    """Why the next write must be a compaction, or None if a head write will do."""
    since = now - written.compacted_at
    if pending.snapshot_changed:
        return "changed"
    if pending.over_capacity:
        return "capacity"
    if pending.head_bytes > HEAD_MAX_BYTES:
        return "head full"
    if pending.head_bytes >= HEAD_SHARE_MIN_BYTES and pending.head_count > written.snapshot_count:
        return "head share"
    if pending.lifted and since >= LIFTED_COMPACT_SECONDS:
        return "lifted"
    if pending.expired and since >= EXPIRED_COMPACT_SECONDS:
        return "expired"
    return None


def compaction_delay(written: Written, pending: Pending, now: float) -> float | None:
    """Seconds until a compaction held back for its pace is due (None: none is)."""
    if pending.lifted:
        return max(0.0, written.compacted_at + LIFTED_COMPACT_SECONDS - now)
    return None


def head_write_delay(written: Written, now: float) -> float:
    """Seconds until the head may be written again (0: now).

    The pace is set by the size of the last write: a small head goes out at
    once, a large one waits its turn, so under a flood the head's bytes reach
    etcd at ``HEAD_WRITE_RATE`` however many passes ask.
    """
    ready_at = written.head_written_at + written.last_head_bytes / HEAD_WRITE_RATE
    return max(0.0, ready_at - now)


def encode_parts(banlist: PackedBanList, limit: int = MAX_PARTS - 1) -> Iterator[bytes]:
    """The snapshot parts of ``banlist``'s sections, in order, each under ``PART_MAX_BYTES``.

    Parts are produced one at a time, so the caller can write each and let it
    go. Raises :class:`SnapshotTooLargeError` before the part past ``limit``.
    """
    runs: list[tuple[Columns, int, int]] = list(banlist.wire_sections())
    per_part = _FIRST_PART_ENTRIES
    produced = 0
    while runs:
        taken: list[tuple[Columns, int, int]] = []
        count = 0
        for columns, start, end in runs:
            take = min(end - start, per_part - count)
            taken.append((columns, start, start + take))
            count += take
            if count == per_part:
                break
        sections = (columns.wire(start, end, banlist.expiring) for columns, start, end in taken)
        data = encode_part(sections, level=ZLIB_LEVEL)
        if len(data) > PART_MAX_BYTES and count > 1:
            per_part = max(1, count * PART_TARGET_BYTES // len(data))
            continue
        produced += 1
        if produced > limit:
            raise SnapshotTooLargeError(f"the ban list needs more than {limit} parts")
        yield data
        runs = _after(runs, count)
        if count == per_part:
            per_part = max(1024, count * PART_TARGET_BYTES // max(1, len(data)))


def _after(runs: list[tuple[Columns, int, int]], count: int) -> list[tuple[Columns, int, int]]:
    """``runs`` without their first ``count`` entries."""
    rest: list[tuple[Columns, int, int]] = []
    for columns, start, end in runs:
        if count >= end - start:
            count -= end - start
            continue
        rest.append((columns, start + count, end))
        count = 0
    return rest
