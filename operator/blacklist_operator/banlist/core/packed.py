"""The in-memory ban list: sorted packed columns per prefix length, and a small head (pure, no I/O).

A ban is a :class:`~blacklist_contract.prefixes.Prefix` and a *stamp*: an unsigned
32-bit number of seconds that orders bans from oldest to newest. With a ban
duration the stamp is the ban's expiry (hit second + duration), so the expiry
written to the ConfigMaps is the stamp itself; without one it is the second of
the latest hit and the written expiry is ``0`` (never). Eviction at capacity
drops the lowest stamps: the oldest bans, never the newest.

Bans live in two places, mirroring the ConfigMaps (:mod:`blacklist_contract.wire`):

* **sections**, one per ``(version, length)``: sorted ``array`` columns (keys,
  the low 64 bits of long IPv6 prefixes, stamps), no Python object per ban, so
  5,000,000 IPv4 bans take 40 MB; they are what the snapshot parts carry;
* **the head**: a dict of the bans added (or whose expiry moved) since the last
  merge, which the head ConfigMap carries as text lines. It stays small: the
  sync merges it into the sections when its text outgrows its bound.

Merging moves blocks of the columns in place (chunked slice moves from the
back), so it never holds the list twice nor a Python ``int`` per ban; a full
rebuild is :mod:`.rebuild`'s.
"""

from __future__ import annotations

import hashlib
import heapq
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from blacklist_contract.lines import FOREVER, format_line
from blacklist_contract.prefixes import IPV4, IPV6, Prefix
from blacklist_contract.wire import Section

_LOW64 = (1 << 64) - 1
# Columns move in blocks of at most this many entries, so a move never copies a whole column.
_MOVE_CHUNK = 1 << 18


def _typecode(version: int) -> str:
    return "I" if version == IPV4 else "Q"


def split(prefix: Prefix) -> tuple[int, int | None]:
    """``(key, low)`` of a prefix, as its columns hold it (``low`` None unless IPv6 past /64)."""
    if prefix.version == IPV4:
        return prefix.network, None
    if prefix.length > 64:
        return prefix.network >> 64, prefix.network & _LOW64
    return prefix.network >> 64, None


@dataclass
class Columns:
    """The sorted bans of one ``(version, length)``."""

    version: int
    length: int
    keys: array[int]
    low: array[int] | None
    stamps: array[int]

    @classmethod
    def empty(cls, version: int, length: int) -> Columns:
        """A section without bans."""
        wide = version == IPV6 and length > 64
        return cls(
            version, length, array(_typecode(version)), array("Q") if wide else None, array("I")
        )

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, key: int, low: int | None) -> tuple[int, bool]:
        """Where ``(key, low)`` is, or would be inserted, and whether it is there."""
        at = bisect_left(self.keys, key)
        if self.low is None or low is None:
            return at, at < len(self.keys) and self.keys[at] == key
        end = bisect_right(self.keys, key, at)
        at = bisect_left(self.low, low, at, end)
        return at, at < end and self.low[at] == low

    def prefix(self, index: int) -> Prefix:
        """The prefix of entry ``index``."""
        if self.version == IPV4:
            return Prefix(IPV4, self.keys[index], self.length)
        low = self.low[index] if self.low is not None else 0
        return Prefix(IPV6, self.keys[index] << 64 | low, self.length)

    def append(self, key: int, low: int | None, stamp: int) -> None:
        """Add one ban at the end (the caller keeps the order it needs)."""
        self.keys.append(key)
        if self.low is not None:
            self.low.append(low or 0)
        self.stamps.append(stamp)

    def clear(self) -> None:
        """Drop every ban, handing the arrays' memory back."""
        for column in self._arrays():
            del column[:]

    def _arrays(self) -> list[array[int]]:
        return [self.keys, *([self.low] if self.low is not None else []), self.stamps]

    def insert(self, rows: list[tuple[int, int | None, int]]) -> None:
        """Insert sorted ``(key, low, stamp)`` rows none of which is present, in place."""
        positions = [self.find(key, low)[0] for key, low, _ in rows]
        count = len(rows)
        old = len(self.keys)
        for column in self._arrays():
            column.frombytes(bytes(column.itemsize * count))
        end = old
        for offset in range(count - 1, -1, -1):
            at = positions[offset]
            for column in self._arrays():
                _move(column, at, end, offset + 1)
            key, low, stamp = rows[offset]
            self.keys[at + offset] = key
            if self.low is not None:
                self.low[at + offset] = low or 0
            self.stamps[at + offset] = stamp
            end = at

    def delete(self, indexes: list[int]) -> None:
        """Delete the entries at the sorted, distinct ``indexes``, in place."""
        if not indexes:
            return
        for column in self._arrays():
            write = indexes[0]
            for number, index in enumerate(indexes):
                end = indexes[number + 1] if number + 1 < len(indexes) else len(column)
                _move(column, index + 1, end, write - index - 1)
                write += end - index - 1
            del column[write:]

    def wire(self, start: int, end: int, expiring: bool) -> Section:
        """Entries ``start:end`` as a wire section (expiries the stamps, or all never)."""
        expiries = self.stamps[start:end] if expiring else array("I", bytes(4 * (end - start)))
        low = self.low[start:end] if self.low is not None else None
        return Section(self.version, self.length, self.keys[start:end], low, expiries)


def _move(column: array[int], start: int, end: int, by: int) -> None:
    """Move ``column[start:end]`` by ``by`` places, in chunks (overlap-safe both ways)."""
    if by == 0 or end <= start:
        return
    if by > 0:
        stop = end
        while stop > start:
            begin = max(start, stop - _MOVE_CHUNK)
            column[begin + by : stop + by] = column[begin:stop]
            stop = begin
    else:
        begin = start
        while begin < end:
            stop = min(end, begin + _MOVE_CHUNK)
            column[begin + by : stop + by] = column[begin:stop]
            begin = stop


@dataclass
class PackedBanList:
    """Every ban of one resource: sorted sections and the head of recent changes."""

    # Whether stamps are expiries (a ban duration is set) or hit seconds.
    expiring: bool = False
    sections: dict[tuple[int, int], Columns] = field(default_factory=dict)
    # Bans added or changed since the last merge: prefix -> stamp.
    head: dict[Prefix, int] = field(default_factory=dict)
    # How many of ``head`` are not in ``sections`` (the rest move an expiry).
    _fresh: int = 0
    # The bytes of the head's lines (:meth:`head_text`), kept as the head changes.
    head_bytes: int = 0

    def __len__(self) -> int:
        return sum(len(columns) for columns in self.sections.values()) + self._fresh

    @property
    def snapshot_count(self) -> int:
        """Bans held in the sections."""
        return sum(len(columns) for columns in self.sections.values())

    def _located(self, prefix: Prefix) -> tuple[Columns | None, int, bool]:
        columns = self.sections.get((prefix.version, prefix.length))
        if columns is None:
            return None, 0, False
        key, low = split(prefix)
        at, found = columns.find(key, low)
        return columns, at, found

    def stamp(self, prefix: Prefix) -> int | None:
        """The stamp of ``prefix``, or None if it is not banned."""
        if prefix in self.head:
            return self.head[prefix]
        columns, at, found = self._located(prefix)
        return columns.stamps[at] if columns is not None and found else None

    def __contains__(self, prefix: object) -> bool:
        return isinstance(prefix, Prefix) and self.stamp(prefix) is not None

    def expiry(self, stamp: int) -> int:
        """The expiry a stamp stands for on the wire."""
        return stamp if self.expiring else FOREVER

    def add(self, prefix: Prefix, stamp: int) -> bool:
        """Ban ``prefix`` (or renew it); True if what the ConfigMaps carry changed."""
        if prefix in self.head:
            if stamp <= self.head[prefix]:
                return False
            self._set_head(prefix, stamp)
            return self.expiring
        columns, at, found = self._located(prefix)
        if columns is not None and found:
            if stamp <= columns.stamps[at]:
                return False
            columns.stamps[at] = stamp
            if not self.expiring:
                return False  # Only the eviction order moved; no line changes.
            self._set_head(prefix, stamp)
            return True
        self._set_head(prefix, stamp)
        self._fresh += 1
        return True

    def _line_bytes(self, prefix: Prefix, stamp: int) -> int:
        return len(format_line(prefix, self.expiry(stamp))) + 1

    def _set_head(self, prefix: Prefix, stamp: int) -> None:
        old = self.head.get(prefix)
        if old is not None:
            self.head_bytes -= self._line_bytes(prefix, old)
        self.head[prefix] = stamp
        self.head_bytes += self._line_bytes(prefix, stamp)

    def remove(self, prefix: Prefix) -> tuple[bool, bool]:
        """Lift ``prefix``: (whether it was banned, whether the sections held it)."""
        old = self.head.pop(prefix, None)
        in_head = old is not None
        if old is not None:
            self.head_bytes -= self._line_bytes(prefix, old)
        columns, at, found = self._located(prefix)
        if columns is not None and found:
            columns.delete([at])
            return True, True
        if in_head:
            self._fresh -= 1
        return in_head, False

    def hold_in_head(self, bans: dict[Prefix, int]) -> None:
        """Move ``bans`` that the sections hold with the same expiry back into the head.

        After a rebuild, the bans the head ConfigMap carries as lines stay lines,
        so an unchanged list compares equal to the one written and is not rewritten.
        """
        doomed: dict[tuple[int, int], list[int]] = {}
        held: dict[Prefix, int] = {}
        for prefix, stamp in bans.items():
            columns, at, found = self._located(prefix)
            if columns is None or not found:
                continue
            if self.expiry(columns.stamps[at]) != self.expiry(stamp):
                continue
            doomed.setdefault((prefix.version, prefix.length), []).append(at)
            held[prefix] = columns.stamps[at]
        for where, indexes in doomed.items():
            self.sections[where].delete(sorted(indexes))
        self.sections = {where: columns for where, columns in self.sections.items() if len(columns)}
        for prefix, stamp in held.items():
            self._set_head(prefix, stamp)
            self._fresh += 1

    def within(self, prefix: Prefix) -> list[Prefix]:
        """The banned prefixes that lie inside ``prefix`` (what a lift of a range lifts)."""
        found = {banned for banned in self.head if _inside(banned, prefix)}
        key_width = 32 if prefix.version == IPV4 else 64
        first = split(Prefix(prefix.version, prefix.network, 0))[0]
        span = 1 << max(0, key_width - prefix.length)
        for (version, length), columns in self.sections.items():
            if version != prefix.version or length < prefix.length:
                continue
            start = bisect_left(columns.keys, first)
            end = bisect_left(columns.keys, first + span, start)
            for index in range(start, end):
                candidate = columns.prefix(index)
                if _inside(candidate, prefix):
                    found.add(candidate)
        return sorted(found)

    def head_bans(self) -> list[tuple[Prefix, int]]:
        """The head's bans, sorted: what the head ConfigMap's lines carry."""
        return [(prefix, self.expiry(stamp)) for prefix, stamp in sorted(self.head.items())]

    def head_text(self, bridge: Mapping[Prefix, int] | None = None) -> str:
        """The head's lines; with ``bridge``, its bans too (the head's stamp wins)."""
        if not bridge:
            bans = self.head_bans()
        else:
            merged = {**bridge, **self.head}
            bans = [(prefix, self.expiry(stamp)) for prefix, stamp in sorted(merged.items())]
        return "".join(format_line(prefix, expiry) + "\n" for prefix, expiry in bans)

    def drop_expired_head(self, now: int) -> bool:
        """Drop head bans that have expired (those in the sections wait for a merge)."""
        if not self.expiring:
            return False
        expired = [prefix for prefix, stamp in self.head.items() if stamp <= now]
        for prefix in expired:
            self.remove(prefix)
        return bool(expired)

    def merge(self, now: int | None = None) -> None:
        """Move the head into the sections; with ``now``, drop every expired ban too."""
        grouped: dict[tuple[int, int], list[tuple[int, int | None, int]]] = {}
        for prefix, stamp in self.head.items():
            columns, at, found = self._located(prefix)
            if columns is not None and found:
                columns.stamps[at] = max(columns.stamps[at], stamp)
                continue
            key, low = split(prefix)
            grouped.setdefault((prefix.version, prefix.length), []).append((key, low, stamp))
        for where, rows in grouped.items():
            columns = self.sections.get(where)
            if columns is None:
                columns = self.sections[where] = Columns.empty(*where)
            rows.sort(key=lambda row: (row[0], row[1] or 0))
            columns.insert(rows)
        self.head.clear()
        self._fresh = 0
        self.head_bytes = 0
        if now is not None and self.expiring:
            for columns in self.sections.values():
                if len(columns) and min(columns.stamps) <= now:
                    columns.delete([i for i, stamp in enumerate(columns.stamps) if stamp <= now])
        self.sections = {
            where: self.sections[where]
            for where in sorted(self.sections)
            if len(self.sections[where])
        }

    def oldest_stamp(self) -> int | None:
        """The lowest stamp of the sections (the next expiry, with a duration)."""
        lows = [min(columns.stamps) for columns in self.sections.values() if len(columns)]
        return min(lows) if lows else None

    def evict(self, capacity: int) -> int:
        """Merge, then drop the oldest bans until at most ``capacity`` remain; how many went."""
        self.merge()
        excess = len(self) - capacity
        if excess <= 0:
            return 0
        stamps = (stamp for columns in self.sections.values() for stamp in columns.stamps)
        threshold = max(heapq.nsmallest(excess, stamps))
        # Every ban older than the threshold goes; of those at it, the first ones found.
        at_threshold = excess - sum(
            1 for columns in self.sections.values() for stamp in columns.stamps if stamp < threshold
        )
        for columns in self.sections.values():
            doomed: list[int] = []
            for index, stamp in enumerate(columns.stamps):
                if stamp < threshold:
                    doomed.append(index)
                elif stamp == threshold and at_threshold > 0:
                    doomed.append(index)
                    at_threshold -= 1
            columns.delete(doomed)
        self.sections = {where: columns for where, columns in self.sections.items() if len(columns)}
        return excess

    def wire_sections(self) -> Iterator[tuple[Columns, int, int]]:
        """Every section in wire order, as ``(columns, 0, len)``."""
        for where in sorted(self.sections):
            columns = self.sections[where]
            yield columns, 0, len(columns)

    def digest(self) -> bytes:
        """A digest of what the ConfigMaps carry once merged (keys and expiries)."""
        hasher = hashlib.blake2b(digest_size=16)
        for where in sorted(self.sections):
            columns = self.sections[where]
            hasher.update(repr(where).encode())
            hasher.update(columns.keys)
            if columns.low is not None:
                hasher.update(columns.low)
            if self.expiring:
                hasher.update(columns.stamps)
        for prefix, expiry in self.head_bans():
            hasher.update(format_line(prefix, expiry).encode())
        return hasher.digest()


def _inside(candidate: Prefix, outer: Prefix) -> bool:
    width = 32 if outer.version == IPV4 else 128
    if candidate.version != outer.version or candidate.length < outer.length:
        return False
    shift = width - outer.length
    return candidate.network >> shift == outer.network >> shift
