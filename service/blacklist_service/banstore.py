"""The replica's ban list, shared by every server worker through an append-only file.

Each worker keeps, per address key (see :mod:`blacklist_service.addresses`),
the state of its latest record in a ``dict`` of ints: O(1) membership whatever
the size, and a dict holding only ints is not tracked by the garbage
collector, whose full collections would otherwise walk a million entries
(about 30 ms) every so often. The dict mirrors ``bans-v2.log`` in
``STATE_DIR``, a file of fixed 24-byte records that only ever grows: the
16-byte big-endian key and a signed 64-bit big-endian value,

* ``>= 0``: banned until that Unix time in seconds (``0``: for ever);
* ``< 0``: the ban was lifted at ``-value`` Unix milliseconds.

The latest record of a key wins. A worker that writes appends its records with
one ``O_APPEND`` write, which Linux applies atomically; before each check every
worker compares the file's size with what it has read (one ``fstat``) and reads
only the new records. Writers decide what to write and write it while holding
:meth:`BanStore.locked` (a thread lock and an ``flock``), so a decision made on
the state of a key (ban, lift) never overwrites a record another process wrote
in between. So a ban made by any worker, or by the ban-list watcher, and a
lift applied by the leader, hold in every worker from its next request on.

The file is the replica's memory of bans and lifts across restarts of its
processes. ``bans.log``, the earlier format (16-byte records, bans only), is
not read: a new pod starts with an empty state directory anyway.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from operator import countOf
from pathlib import Path

BAN_FILE = "bans-v2.log"
KEY_SIZE = 16
VALUE_SIZE = 8
RECORD_SIZE = KEY_SIZE + VALUE_SIZE
FOREVER = 0


def encode(records: Iterable[tuple[int, int]]) -> bytes:
    """The file's bytes for ``(key, value)`` records."""
    return b"".join(
        key.to_bytes(KEY_SIZE, "big") + value.to_bytes(VALUE_SIZE, "big", signed=True)
        for key, value in records
    )


def decode(data: bytes) -> list[tuple[int, int]]:
    """``(key, value)`` of the whole records in ``data`` (a trailing partial one is ignored)."""
    whole = len(data) - len(data) % RECORD_SIZE
    return [
        (
            int.from_bytes(data[at : at + KEY_SIZE], "big"),
            int.from_bytes(data[at + KEY_SIZE : at + RECORD_SIZE], "big", signed=True),
        )
        for at in range(0, whole, RECORD_SIZE)
    ]


def is_active(value: int | None, now: float) -> bool:
    """Whether a key whose latest record holds ``value`` is banned at ``now``."""
    return value is not None and (value == FOREVER or value > now)


def lifted_at(value: int | None) -> int | None:
    """The Unix milliseconds of the lift a record holds, or None if it holds a ban."""
    return -value if value is not None and value < 0 else None


def extends(current: int | None, until: int, now: float) -> bool:
    """Whether banning until ``until`` bans longer than the record ``current`` does."""
    if not is_active(current, now):
        return True
    assert current is not None
    return current != FOREVER and (until == FOREVER or until > current)


class BanStore:
    """The banned, expiring and lifted address keys, in step with ``bans-v2.log``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._values: dict[int, int] = {}
        self._offset = 0
        self._read_lock = threading.Lock()
        # Re-entrant, so add() may run inside a caller's locked(); the flock is taken
        # once per outermost holder (a nested LOCK_UN would release the outer's lock).
        self._write_lock = threading.RLock()
        self._depth = 0
        self.refresh()

    def refresh(self) -> None:
        """Take in records other processes appended since the last look."""
        if os.fstat(self._descriptor).st_size <= self._offset:
            return
        with self._read_lock:
            size = os.fstat(self._descriptor).st_size
            whole = (size - self._offset) // RECORD_SIZE * RECORD_SIZE
            if whole <= 0:
                return
            data = os.pread(self._descriptor, whole, self._offset)
            # pread may return less than asked only at end of file, which fstat excludes.
            self._values.update(decode(data))
            self._offset += len(data) - len(data) % RECORD_SIZE

    def __contains__(self, key: object) -> bool:
        # refresh()'s own first test, inlined: this runs on every request.
        if os.fstat(self._descriptor).st_size > self._offset:
            self.refresh()
        value = self._values.get(key)  # type: ignore[call-overload]
        # One comparison for a ban that expires (or was lifted: negative is never > now).
        return value is not None and (value == FOREVER or value > time.time())

    def __len__(self) -> int:
        return self.counts()[0]

    def state(self, key: int) -> int | None:
        """The value of the latest record of ``key``, or None if it has none."""
        self.refresh()
        return self._values.get(key)

    def counts(self) -> tuple[int, int, int]:
        """How many keys are banned, lifted, and banned with an expiry that has passed."""
        self.refresh()
        values = list(self._values.values())
        forever = countOf(values, FOREVER)
        if forever == len(values):
            return forever, 0, 0
        now = time.time()
        expiring = sum(1 for value in values if value > now)
        lifted = sum(1 for value in values if value < 0)
        return forever + expiring, lifted, len(values) - forever - expiring - lifted

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store against every other writer, in this process and in others."""
        with self._write_lock:
            if self._depth == 0:
                fcntl.flock(self._descriptor, fcntl.LOCK_EX)
            self._depth += 1
            try:
                self.refresh()
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._descriptor, fcntl.LOCK_UN)

    def _append(self, records: list[tuple[int, int]]) -> None:
        """Write ``records`` (the caller holds :meth:`locked`) and take them in at once."""
        if not records:
            return
        data = memoryview(encode(records))
        written = 0
        while written < len(data):
            written += os.write(self._descriptor, data[written:])
        # Our own records are taken in by the next refresh like anyone's; take them
        # now as well so this process enforces them before that.
        self._values.update(records)

    def write(self, records: Iterable[tuple[int, int]]) -> list[int]:
        """Append ``(key, value)`` records as given; return the keys not banned before."""
        with self.locked():
            now = time.time()
            batch = list(records)
            fresh = [key for key, _ in batch if not is_active(self._values.get(key), now)]
            self._append(batch)
            return [key for key in fresh if is_active(self._values.get(key), now)]

    def ban(self, bans: Iterable[tuple[int, int]]) -> list[int]:
        """Ban each key until its time (``0``: for ever) unless it is banned longer already.

        Returns the keys that were not banned before (in the order given). A
        lifted or expired key is banned again.
        """
        with self.locked():
            now = time.time()
            records: dict[int, int] = {}
            fresh: list[int] = []
            for key, until in bans:
                current = records.get(key, self._values.get(key))
                if extends(current, until, now):
                    if not is_active(self._values.get(key), now) and key not in records:
                        fresh.append(key)
                    records[key] = until
            self._append(list(records.items()))
            return fresh

    def add(self, keys: Iterable[int], until: int = FOREVER) -> list[int]:
        """Ban ``keys`` until ``until``; return those that were not banned yet (in order)."""
        return self.ban((key, until) for key in keys)

    def lift(self, lifts: Iterable[tuple[int, int]]) -> list[int]:
        """Record each ``(key, Unix milliseconds)`` lift unless one as late is recorded.

        Returns the keys whose lift was written. Whether a ban made after the
        lift must survive it is the caller's to decide, holding :meth:`locked`.
        """
        with self.locked():
            records: dict[int, int] = {}
            for key, at in lifts:
                previous = lifted_at(records.get(key, self._values.get(key)))
                if previous is None or previous < at:
                    records[key] = -at
            self._append(list(records.items()))
            return list(records)

    def keys(self) -> set[int]:
        """Every key banned now."""
        self.refresh()
        now = time.time()
        return {key for key, value in self._values.items() if is_active(value, now)}

    def close(self) -> None:
        """Release the file."""
        os.close(self._descriptor)
