"""The fixed 32-byte records of a generation's log (pure, no I/O).

A record is ``<BBBxIQQq``: the prefix's version and length, the record's kind,
a pad byte, the Unix second it was written, the network as two 64-bit halves
(IPv4: all in the low half), and a signed value whose meaning the kind gives:

* :data:`OWN`: a ban made by this replica (a hit, or the ledger at a lone
  start), ``value`` the expiry (Unix seconds, ``0`` for ever). In a cluster it
  stays in the log across folds until the operator's list has included it once;
* :data:`LISTED`: a ban the operator's list holds, ``value`` its expiry;
* :data:`LIFT`: the ban was lifted by the lift whose id (``denied_access_lifts``)
  is ``value``;
* :data:`REMOVED`: the operator's list dropped a ban it had listed;
* :data:`NEXT`: the last record of a log: generation ``value`` replaces this one.

The latest record of a prefix wins over older ones and over the snapshot.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

from blacklist_contract.prefixes import IPV4, Prefix

OWN = 1
LISTED = 2
LIFT = 3
REMOVED = 4
NEXT = 9
KINDS = frozenset({OWN, LISTED, LIFT, REMOVED, NEXT})
RECORD = struct.Struct("<BBBxIQQq")
RECORD_SIZE = RECORD.size
_LOW64 = (1 << 64) - 1


class Record(NamedTuple):
    """One log record."""

    kind: int
    prefix: Prefix
    value: int
    written: int  # Unix seconds


def encode(record: Record) -> bytes:
    """The 32 bytes of a record."""
    version, network, length = record.prefix
    return RECORD.pack(
        version, length, record.kind, record.written, network >> 64, network & _LOW64, record.value
    )


def decode(data: bytes | memoryview) -> Iterator[Record]:
    """The records of ``data`` (a whole number of them); ValueError on a record that is none."""
    for version, length, kind, written, high, low, value in RECORD.iter_unpack(data):
        if kind not in KINDS:
            raise ValueError(f"ban log record of unknown kind {kind}")
        network = low if version == IPV4 else high << 64 | low
        yield Record(kind, Prefix(version, network, length), value, written)


def next_generation(generation: int) -> Record:
    """The record that ends a log: generation ``generation`` takes over."""
    return Record(NEXT, Prefix(IPV4, 0, 0), generation, 0)
