"""A snapshot of bans as sorted packed columns in one file, mapped read-only by every worker.

The file holds, per ``(version, length)`` section (the layout of
:class:`blacklist_contract.wire.Section`, native byte order): ``keys``
(``I`` for IPv4, the top 64 bits as ``Q`` for IPv6), ``low`` (IPv6 longer
than /64 only), ``expiries`` (``I``, ``0`` for ever) and a bucket index; then a
JSON table of the sections and the snapshot's metadata, and a trailer giving
the table's place. Every worker maps the file with ``mmap``: its pages sit in
the page cache once per pod however many workers read them, and only the
pages a lookup touches are ever read.

A lookup masks the address to the section's length, takes the range of its
bucket from the index (up to ``2**20`` buckets over the bits below the
section's common prefix, so clustered keys still spread; about four entries a
bucket, the index a quarter of the keys' size) and bisects that range of the
column, which ``bisect`` does in C on a ``memoryview``: two or three steps at
any size. Building streams: columns go to the file (and
two side files) chunk by chunk as they arrive, sorted, so no list of every ban
is ever held in memory.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import struct
import tempfile
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from blacklist_contract.prefixes import IPV4, Prefix
from blacklist_contract.wire import Section

MAGIC = b"BLS1"
TRAILER = struct.Struct("<QI4s")
INDEX_BITS = 20
CHUNK_ENTRIES = 1 << 16
_LOW64 = (1 << 64) - 1
SectionId = tuple[int, int]  # (version, length)
# What a merge does to one prefix of a section: a new expiry, or None to drop it.
Update = tuple[int, int | None]


def key_width(version: int) -> int:
    """Bits of a section's key: all of an IPv4 address, the top half of an IPv6 one."""
    return 32 if version == IPV4 else 64


class SectionView:
    """One section of an open snapshot: its columns as views into the mapping."""

    def __init__(self, data: memoryview, entry: Mapping[str, Any]) -> None:
        self.version: int = entry["version"]
        self.length: int = entry["length"]
        self.count: int = entry["count"]
        self.key_shift = 0 if self.version == IPV4 else 64
        at = entry["keys"]
        if self.version == IPV4:
            self.keys = data[at : at + self.count * 4].cast("I")
        else:
            self.keys = data[at : at + self.count * 8].cast("Q")
        self.low: memoryview | None = None
        if entry["low"]:
            at = entry["low"]
            self.low = data[at : at + self.count * 8].cast("Q")
        at = entry["expiries"]
        self.expiries = data[at : at + self.count * 4].cast("I")
        at = entry["index"]
        self.bits: int = entry["bits"]
        self.index = data[at : at + ((1 << self.bits) + 1) * 4].cast("I")
        self.first: int = entry["first"]
        self.last: int = entry["last"]
        self.shift: int = entry["shift"]
        self.bucket_mask = (1 << self.bits) - 1
        self._find = self._finder()

    def find(self, network: int) -> int | None:
        """The expiry of ``network``'s entry, or None if the section holds none."""
        return self._find(network)

    def _finder(self) -> Callable[[int], int | None]:
        """:meth:`find` as a closure over the columns.

        It runs on every request, and a closure's variables cost less to reach
        than an object's attributes.
        """
        keys, index, low_column, expiries = self.keys, self.index, self.low, self.expiries
        first, last, key_shift = self.first, self.last, self.key_shift
        shift, bucket_mask = self.shift, self.bucket_mask

        def find(network: int) -> int | None:
            key = network >> key_shift
            if key < first or key > last:
                return None
            bucket = (key >> shift) & bucket_mask
            high = index[bucket + 1]
            at = bisect_left(keys, key, index[bucket], high)
            if at == high or keys[at] != key:
                return None
            if low_column is not None:
                end = bisect_right(keys, key, at, high)
                low = network & _LOW64
                at = bisect_left(low_column, low, at, end)
                if at == end or low_column[at] != low:
                    return None
            expiry: int = expiries[at]
            return expiry

        return find

    def position(self, network: int) -> int:
        """The index of the first entry not below ``network``."""
        key = network >> self.key_shift
        at = bisect_left(self.keys, key)
        if self.low is not None:
            end = bisect_right(self.keys, key, at)
            at = bisect_left(self.low, network & _LOW64, at, end)
        return at

    def network(self, at: int) -> int:
        """The network of entry ``at``."""
        if self.version == IPV4:
            return int(self.keys[at])
        return int(self.keys[at]) << 64 | (int(self.low[at]) if self.low is not None else 0)

    def chunks(self, start: int, end: int) -> Iterator[Section]:
        """Entries ``start`` to ``end`` as sections of at most :data:`CHUNK_ENTRIES`."""
        for at in range(start, end, CHUNK_ENTRIES):
            stop = min(end, at + CHUNK_ENTRIES)
            chunk = Section.empty(self.version, self.length)
            chunk.keys.frombytes(self.keys[at:stop].cast("B"))
            if self.low is not None and chunk.low is not None:
                chunk.low.frombytes(self.low[at:stop].cast("B"))
            chunk.expiries.frombytes(self.expiries[at:stop].cast("B"))
            yield chunk


class Snapshot:
    """A snapshot file, mapped read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(descriptor).st_size
            # The mapping outlives the descriptor; the views below keep it alive, so a
            # worker still reading an older generation is never cut short.
            mapping = mmap.mmap(descriptor, size, access=mmap.ACCESS_READ)
        finally:
            os.close(descriptor)
        data = memoryview(mapping)
        if size < TRAILER.size:
            raise ValueError(f"{path} is too short to be a ban snapshot")
        at, length, magic = TRAILER.unpack_from(data, size - TRAILER.size)
        if magic != MAGIC:
            raise ValueError(f"{path} is not a ban snapshot")
        table = json.loads(bytes(data[at : at + length]))
        self.metadata: dict[str, Any] = table["metadata"]
        self.count: int = table["count"]
        self.sections: dict[SectionId, SectionView] = {
            (entry["version"], entry["length"]): SectionView(data, entry)
            for entry in table["sections"]
        }

    def find(self, prefix: Prefix) -> int | None:
        """The expiry of ``prefix``'s entry, or None."""
        section = self.sections.get((prefix.version, prefix.length))
        return None if section is None else section.find(prefix.network)


@dataclass
class _OpenSection:
    version: int
    length: int
    keys_at: int
    low: IO[bytes] | None
    expiries: IO[bytes]
    count: int = 0
    first: int = 0
    last: tuple[int, int] = (-1, -1)


def _side_file(directory: Path) -> IO[bytes]:
    """An anonymous file next to the snapshot for a column whose length is not known yet."""
    return tempfile.TemporaryFile(dir=directory)  # the writer closes it once copied


class SnapshotWriter:
    """Builds a snapshot file from sorted sections, streamed in (version, length) order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        descriptor, name = tempfile.mkstemp(prefix="snapshot-", suffix=".tmp", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(descriptor, "w+b")
        self._entries: list[dict[str, Any]] = []
        self._open: _OpenSection | None = None
        self.count = 0

    def add(self, section: Section) -> None:
        """Append a run of sorted entries (a section, or the next piece of the current one)."""
        if not len(section):
            return
        ident = (section.version, section.length)
        current = self._open
        if current is None or ident != (current.version, current.length):
            done = [(entry["version"], entry["length"]) for entry in self._entries]
            if current is not None:
                done.append((current.version, current.length))
            if done and ident <= max(done):
                raise ValueError(f"ban-list section {ident} is out of order")
            self._close_section()
            current = self._start(section)
        first = (section.keys[0], section.low[0] if section.low is not None else 0)
        if first <= current.last:
            raise ValueError(f"ban-list section {ident} is not sorted across its pieces")
        section.keys.tofile(self._file)
        if current.low is not None and section.low is not None:
            section.low.tofile(current.low)
        section.expiries.tofile(current.expiries)
        current.count += len(section)
        current.last = (section.keys[-1], section.low[-1] if section.low is not None else 0)
        self.count += len(section)

    def _align(self) -> None:
        padding = -self._file.tell() % 8
        if padding:
            self._file.write(b"\0" * padding)

    def _start(self, section: Section) -> _OpenSection:
        self._align()
        # Closed by _copy once appended (or by abandon): they outlive this call.
        low = _side_file(self.directory) if section.low is not None else None
        current = _OpenSection(
            section.version,
            section.length,
            self._file.tell(),
            low,
            _side_file(self.directory),
            first=section.keys[0],
        )
        self._open = current
        return current

    def _copy(self, side: IO[bytes]) -> int:
        self._align()
        at = self._file.tell()
        side.seek(0)
        shutil.copyfileobj(side, self._file, 1 << 20)
        side.close()
        return at

    def _close_section(self) -> None:
        current = self._open
        if current is None:
            return
        self._open = None
        low_at = self._copy(current.low) if current.low is not None else 0
        expiries_at = self._copy(current.expiries)
        width = key_width(current.version)
        first, last = current.first, current.last[0]
        common = width - (first ^ last).bit_length()
        bits = max(0, min(INDEX_BITS, width - common, current.count.bit_length() - 2))
        shift = width - common - bits
        base = first >> (shift + bits) << (shift + bits)
        self._file.flush()
        with mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
            view = memoryview(mapping)
            if current.version == IPV4:
                keys = view[current.keys_at : current.keys_at + current.count * 4].cast("I")
            else:
                keys = view[current.keys_at : current.keys_at + current.count * 8].cast("Q")
            index = array("I", (bisect_left(keys, base | b << shift) for b in range(1 << bits)))
            keys.release()
            view.release()
        index.append(current.count)
        self._align()
        index_at = self._file.tell()
        index.tofile(self._file)
        self._entries.append(
            {
                "version": current.version,
                "length": current.length,
                "count": current.count,
                "keys": current.keys_at,
                "low": low_at,
                "expiries": expiries_at,
                "index": index_at,
                "bits": bits,
                "shift": shift,
                "first": first,
                "last": last,
            }
        )

    def finish(self, metadata: Mapping[str, Any]) -> Path:
        """Write the table and trailer; return the finished (temporary) file's path."""
        self._close_section()
        table = json.dumps(
            {"sections": self._entries, "count": self.count, "metadata": dict(metadata)}
        ).encode()
        at = self._file.tell()
        self._file.write(table)
        self._file.write(TRAILER.pack(at, len(table), MAGIC))
        self._file.close()
        return self.path

    def abandon(self) -> None:
        """Drop a snapshot that will not be finished."""
        current, self._open = self._open, None
        if current is not None:
            for side in (current.low, current.expiries):
                if side is not None:
                    side.close()
        self._file.close()
        self.path.unlink(missing_ok=True)


def merged(snapshot: Snapshot, updates: Mapping[SectionId, Sequence[Update]]) -> Iterator[Section]:
    """The sections of ``snapshot`` with ``updates`` (sorted by network per section) applied.

    Runs between updates are copied a chunk at a time; an update replaces,
    inserts or (with None) drops one entry.
    """
    for ident in sorted(set(snapshot.sections) | set(updates)):
        old = snapshot.sections.get(ident)
        position = 0
        for network, expiry in updates.get(ident, ()):
            if old is not None:
                at = old.position(network)
                yield from old.chunks(position, at)
                if at < old.count and old.network(at) == network:
                    at += 1
                position = at
            if expiry is not None:
                single = Section.empty(*ident)
                single.append(Prefix(ident[0], network, ident[1]), expiry)
                yield single
        if old is not None:
            yield from old.chunks(position, old.count)
