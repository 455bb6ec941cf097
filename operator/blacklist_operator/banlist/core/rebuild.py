"""A ban list rebuilt from bans in any order, in bounded memory (pure, no I/O).

A rescan streams every address of the ledger; :class:`Builder` buckets the bans
by the top byte of their key as they come, then sorts one bucket at a time
(splitting a crowded one by the next byte) into the sorted columns of a
:class:`~.packed.PackedBanList`, and frees each bucket as it goes, handing the
memory back to the system. The peak is about one list, not two, and never a
Python object per ban beyond one bucket's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat

from blacklist_contract.prefixes import IPV4, Prefix
from blacklist_operator.banlist.core.packed import Columns, PackedBanList, split

# A rebuild sorts buckets of at most this many bans as Python objects (a few MB at most).
_SORT_CHUNK = 1 << 16


def _load_trim() -> ctypes._NamedFuncPointer | None:
    """Glibc's ``malloc_trim``, or None on another C library."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


_MALLOC_TRIM = _load_trim()
# A rebuild hands memory back to the system after this many buckets.
_TRIM_EVERY = 16


def release_free_memory() -> None:
    """Return the heap's free pages to the system (glibc keeps them otherwise).

    A rebuild frees small bucket arrays from the heap while the sorted columns
    grow in mapped memory; without this the freed buckets stay resident until
    the end, and the peak is two lists instead of one.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class Builder:
    """Builds a :class:`PackedBanList` from bans in any order, in bounded memory.

    Bans are bucketed by the top byte of their key as they come; :meth:`finish`
    sorts one bucket at a time (splitting a crowded one by the next byte) and
    frees it, so the peak is the packed columns plus one bucket's objects.
    """

    def __init__(self, expiring: bool) -> None:
        self._expiring = expiring
        self._buckets: dict[tuple[int, int], list[Columns | None]] = {}

    def add(self, prefix: Prefix, stamp: int) -> None:
        """Take one ban (a prefix seen twice keeps its highest stamp)."""
        where = (prefix.version, prefix.length)
        buckets = self._buckets.get(where)
        if buckets is None:
            buckets = self._buckets[where] = [None] * 256
        key, low = split(prefix)
        index = key >> (24 if prefix.version == IPV4 else 56)
        bucket = buckets[index]
        if bucket is None:
            bucket = buckets[index] = Columns.empty(*where)
        bucket.append(key, low, stamp)

    def finish(self, between: Callable[[], None] | None = None) -> PackedBanList:
        """The ban list, every section sorted and each prefix once.

        ``between`` is called after each bucket is sorted (at most ``_SORT_CHUNK``
        bans: tens of milliseconds): the whole sort takes seconds at millions of
        bans, and the rescan reads new rows meanwhile.
        """
        result = PackedBanList(self._expiring)
        for where in sorted(self._buckets):
            out = Columns.empty(*where)
            buckets = self._buckets[where]
            width = 32 if where[0] == IPV4 else 64
            for index, bucket in _handed_out(buckets):
                if bucket is not None:
                    _sort_into(out, bucket, width - 16, between)
                if index % _TRIM_EVERY == _TRIM_EVERY - 1:
                    release_free_memory()
            if len(out):
                result.sections[where] = out
        self._buckets.clear()
        return result


def _handed_out(slots: list[Columns | None]) -> Iterator[tuple[int, Columns | None]]:
    """Each slot with its index, taken out of ``slots`` first and emptied once it is done with."""
    for index, slot in enumerate(slots):
        slots[index] = None
        yield index, slot
        if slot is not None:
            slot.clear()


def _sort_into(
    out: Columns, bucket: Columns, shift: int, between: Callable[[], None] | None = None
) -> None:
    """Append ``bucket``'s bans to ``out`` sorted and deduplicated (by bytes of the key).

    A crowded bucket is split by the next byte first, and emptied as it is
    split, so the split never holds the bucket twice. ``between`` is called
    after each run sorted.
    """
    if len(bucket) > _SORT_CHUNK and shift >= 0:
        for _, part in _handed_out(_split(bucket, shift)):
            if part is not None:
                _sort_into(out, part, shift - 8, between)
        return
    zeros: Iterable[int] = bucket.low if bucket.low is not None else repeat(0, len(bucket))
    rows = sorted(zip(bucket.keys, zeros, bucket.stamps, strict=True))
    previous: tuple[int, int] | None = None
    for key, low, stamp in rows:
        if (key, low) == previous:
            # Sorted by stamp within one prefix: the later row holds the highest.
            out.stamps[-1] = stamp
            continue
        previous = (key, low)
        out.append(key, low, stamp)
    if between is not None:
        between()


def _split(bucket: Columns, shift: int) -> list[Columns | None]:
    """``bucket``'s bans in 256 parts by the byte at ``shift``, emptying ``bucket`` as it goes.

    The bucket is taken from its end, a chunk at a time, and shrunk after each
    chunk (an array gives its memory back as it shrinks): the bucket and its
    parts together hold about one bucket's bans at any moment.
    """
    parts: list[Columns | None] = [None] * 256
    while len(bucket):
        start = max(0, len(bucket) - _SORT_CHUNK)
        keys, stamps = bucket.keys[start:], bucket.stamps[start:]
        lows: Iterable[int | None] = (
            bucket.low[start:] if bucket.low is not None else repeat(None, len(keys))
        )
        for key, low, stamp in zip(keys, lows, stamps, strict=True):
            index = (key >> shift) & 0xFF
            part = parts[index]
            if part is None:
                part = parts[index] = Columns.empty(bucket.version, bucket.length)
            part.append(key, low, stamp)
        del bucket.keys[start:], bucket.stamps[start:]
        if bucket.low is not None:
            del bucket.low[start:]
    return parts
