"""The replica's ban list, shared by every server worker through an append-only file.

Each worker keeps the banned addresses as integer keys (see
:mod:`blacklist_service.addresses`) in a ``dict`` with ``None`` values: O(1)
membership whatever the size, and, unlike a ``set``, a dict holding only ints
is not tracked by the garbage collector, whose full collections would
otherwise walk a million entries (about 30 ms) every so often. The
set mirrors ``bans.log`` in ``STATE_DIR``, a file of fixed 16-byte records (the
big-endian key) that only ever grows. A worker that bans an address appends
its record with one ``O_APPEND`` write, which Linux applies atomically; before
each check every worker compares the file's size with what it has read
(one ``fstat``) and reads only the new records; writers take an ``flock``.
So a ban made by any worker, or by the ban-list watcher, holds in every
worker from its next request on.

Bans are only added: the file is the replica's memory of them across
restarts of its processes.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterable
from pathlib import Path

RECORD_SIZE = 16


def encode(keys: Iterable[int]) -> bytes:
    """Records for ``keys``."""
    return b"".join(key.to_bytes(RECORD_SIZE, "big") for key in keys)


def decode(data: bytes) -> list[int]:
    """Keys of whole records in ``data`` (a trailing partial record is ignored)."""
    whole = len(data) - len(data) % RECORD_SIZE
    return [
        int.from_bytes(data[at : at + RECORD_SIZE], "big") for at in range(0, whole, RECORD_SIZE)
    ]


class BanStore:
    """The set of banned address keys, kept in step with ``bans.log`` across processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._keys: dict[int, None] = {}
        self._offset = 0
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        """Take in records other processes appended since the last look."""
        if os.fstat(self._descriptor).st_size <= self._offset:
            return
        with self._lock:
            size = os.fstat(self._descriptor).st_size
            whole = (size - self._offset) // RECORD_SIZE * RECORD_SIZE
            if whole <= 0:
                return
            data = os.pread(self._descriptor, whole, self._offset)
            # pread may return less than asked only at end of file, which fstat excludes.
            self._keys.update(dict.fromkeys(decode(data)))
            self._offset += len(data) - len(data) % RECORD_SIZE

    def __contains__(self, key: object) -> bool:
        self.refresh()
        return key in self._keys

    def __len__(self) -> int:
        self.refresh()
        return len(self._keys)

    def add(self, keys: Iterable[int]) -> list[int]:
        """Ban ``keys``; return those that were not banned yet (in the order given)."""
        self.refresh()
        fresh: list[int] = []
        seen: set[int] = set()
        for key in keys:
            if key not in self._keys and key not in seen:
                fresh.append(key)
                seen.add(key)
        if fresh:
            data = memoryview(encode(fresh))
            # A write to a regular file is whole in practice; the lock keeps another
            # writer from slipping in between the parts of one that is not.
            fcntl.flock(self._descriptor, fcntl.LOCK_EX)
            try:
                written = 0
                while written < len(data):
                    written += os.write(self._descriptor, data[written:])
            finally:
                fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            # Our own records are taken in by the next refresh like anyone's; add them
            # now as well so this process enforces them before that.
            self._keys.update(dict.fromkeys(fresh))
        return fresh

    def keys(self) -> set[int]:
        """A copy of every banned key."""
        self.refresh()
        return set(self._keys)

    def close(self) -> None:
        """Release the file."""
        os.close(self._descriptor)
