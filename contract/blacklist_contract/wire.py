"""A compacted ban list as packed binary sections, and the ConfigMaps that carry it (pure).

A resource ``N``'s ban list is written by the operator as

* the **head**, ConfigMap ``N-banlist``: ``data.addresses``, the bans not yet in
  the snapshot as text lines (:mod:`blacklist_contract.lines`), bounded in size
  so that writing it for every batch of new bans stays cheap; ``data.count``, the
  number of bans in head and snapshot together; ``data.snapshot``, the snapshot's
  generation (``"0"``: none); ``data.parts``, how many part ConfigMaps it spans;
  ``data.capacity``, the configured limit of entries;
* the **snapshot**, ConfigMaps ``N-banlist-1`` … ``N-banlist-<parts>``:
  ``binaryData.bans``, :func:`encode_part` of a contiguous run of the sorted
  list, and the annotation ``blacklist.dev/snapshot`` with its generation. A
  part whose generation is not the head's is being rewritten: read it again
  after the next head change.

Both carry ``blacklist.dev/lifts-seen`` (docs/CONTRACTS.md) and the operator's
labels (:func:`written_by_operator`): a ConfigMap of one of these names without
them is someone else's, and a reader takes nothing from it. A part's bytes:
zlib of ``MAGIC`` then sections, each a header ``<BBI`` (version, length,
count) and its columns, little-endian: ``keys`` (``I`` for IPv4; for IPv6 the
top 64 bits as ``Q``), ``low`` (IPv6 longer than /64 only: the low 64 bits as
``Q``), ``expiries`` (``I``, Unix seconds, ``0`` never). Sections come in
``(version, length)`` order and keys ascending within one, and part ``i + 1``
continues where part ``i`` ends, so parts read in order give every section
sorted: a reader appends, it never merges.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from blacklist_contract.prefixes import IPV4, IPV6, Prefix

MAGIC = b"BLB1"
HEAD_SUFFIX = "-banlist"
# ConfigMap names of the snapshot parts: N-banlist-1 … N-banlist-(MAX_PARTS - 1). A
# part holds up to about 1 MB compressed (some 250,000 to 400,000 entries), so this
# bounds a list at well over 5,000,000 entries; the service's Role names each one.
MAX_PARTS = 64
PART_DATA_KEY = "bans"
SNAPSHOT_ANNOTATION = "blacklist.dev/snapshot"
LIFTS_SEEN_ANNOTATION = "blacklist.dev/lifts-seen"
# The labels the operator puts on every ConfigMap of a ban list.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
INSTANCE_LABEL = "app.kubernetes.io/instance"
OPERATOR_NAME = "blacklist-operator"
_HEADER = struct.Struct("<BBI")
_LOW64 = (1 << 64) - 1


def head_name(resource: str) -> str:
    """The head ConfigMap of a resource's ban list."""
    return f"{resource}{HEAD_SUFFIX}"


def written_by_operator(config_map: Mapping[str, Any], resource: str) -> bool:
    """Whether ``config_map`` carries the operator's labels for ``resource``'s ban list.

    Another team's ConfigMap that happens to have the name (the operator leaves
    it untouched and reports it) has not: its lines would ban or unban anything.
    """
    labels = (config_map.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == OPERATOR_NAME and labels.get(INSTANCE_LABEL) == resource


def part_name(resource: str, index: int) -> str:
    """Snapshot part ``index`` (1-based) of a resource's ban list."""
    if not 1 <= index < MAX_PARTS:
        raise ValueError(f"part index {index} is outside 1..{MAX_PARTS - 1}")
    return f"{resource}{HEAD_SUFFIX}-{index}"


def _column(typecode: str) -> array[int]:
    column = array(typecode)
    if column.itemsize != (4 if typecode == "I" else 8):
        raise RuntimeError(f"array typecode {typecode} has an unexpected size")
    return column


@dataclass
class Section:
    """Bans of one ``(version, length)``, as sorted columns."""

    version: int
    length: int
    keys: array[int]
    low: array[int] | None
    expiries: array[int]

    @classmethod
    def empty(cls, version: int, length: int) -> Section:
        """A section with no bans."""
        wide = version == IPV6 and length > 64
        return cls(
            version,
            length,
            _column("I" if version == IPV4 else "Q"),
            _column("Q") if wide else None,
            _column("I"),
        )

    def __len__(self) -> int:
        return len(self.keys)

    def append(self, prefix: Prefix, expiry: int) -> None:
        """Add a ban at the end (the caller keeps the order)."""
        if prefix.version == IPV4:
            self.keys.append(prefix.network)
        else:
            self.keys.append(prefix.network >> 64)
            if self.low is not None:
                self.low.append(prefix.network & _LOW64)
        self.expiries.append(expiry)

    def prefix(self, index: int) -> Prefix:
        """The prefix of entry ``index``."""
        if self.version == IPV4:
            return Prefix(IPV4, self.keys[index], self.length)
        low = self.low[index] if self.low is not None else 0
        return Prefix(IPV6, self.keys[index] << 64 | low, self.length)

    def bans(self) -> Iterator[tuple[Prefix, int]]:
        """Every ``(prefix, expiry)`` in order."""
        for index in range(len(self.keys)):
            yield self.prefix(index), self.expiries[index]


def _little(column: array[int]) -> bytes:
    if sys.byteorder == "little":
        return column.tobytes()
    swapped = array(column.typecode, column)
    swapped.byteswap()
    return swapped.tobytes()


def _read(typecode: str, data: memoryview, at: int, count: int) -> tuple[array[int], int]:
    column = _column(typecode)
    end = at + count * column.itemsize
    if end > len(data):
        raise ValueError("ban-list part is truncated")
    column.frombytes(data[at:end])
    if sys.byteorder != "little":
        column.byteswap()
    return column, end


def encode_part(sections: Iterable[Section], level: int = 6) -> bytes:
    """The compressed bytes of a part holding ``sections`` (empty ones left out)."""
    chunks = [MAGIC]
    for section in sections:
        if not len(section):
            continue
        chunks.append(_HEADER.pack(section.version, section.length, len(section)))
        chunks.append(_little(section.keys))
        if section.low is not None:
            chunks.append(_little(section.low))
        chunks.append(_little(section.expiries))
    return zlib.compress(b"".join(chunks), level)


def decode_part(data: bytes, max_size: int = 256 << 20) -> list[Section]:
    """The sections of a part; ValueError if the bytes are not one."""
    try:
        decompressor = zlib.decompressobj()
        raw = decompressor.decompress(data, max_size)
    except zlib.error as error:
        raise ValueError(f"ban-list part does not decompress: {error}") from None
    if decompressor.unconsumed_tail:
        raise ValueError("ban-list part is larger than allowed")
    view = memoryview(raw)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise ValueError("ban-list part does not start with the expected magic")
    at = len(MAGIC)
    sections: list[Section] = []
    while at < len(view):
        if at + _HEADER.size > len(view):
            raise ValueError("ban-list part is truncated")
        version, length, count = _HEADER.unpack_from(view, at)
        at += _HEADER.size
        if version not in (IPV4, IPV6) or length > (32 if version == IPV4 else 128):
            raise ValueError(f"ban-list part has a bad section header ({version}, {length})")
        section = Section.empty(version, length)
        section.keys, at = _read(section.keys.typecode, view, at, count)
        if section.low is not None:
            section.low, at = _read("Q", view, at, count)
        section.expiries, at = _read("I", view, at, count)
        sections.append(section)
    return sections
