"""The replica's ban store: one snapshot mapped by every worker, and a small log each mirrors.

``STATE_DIR/bans/`` (:mod:`.files`) holds generations: ``snapshot-G``
(:mod:`.snapshot`, memory-mapped read-only, so its pages are in memory once
per pod) and
``log-G``, an append-only file of :mod:`.records` that each worker mirrors in
a ``dict`` (the bans, lifts and removals since the snapshot; the latest record
of a prefix wins, over the snapshot too). ``current`` names the generation a
starting worker opens.

Before each lookup a worker compares the log's size with what it has read (one
``fstat``) and takes in only the new records. A lookup masks the address to
each prefix length present (a handful: the configured ones and any CIDR bans),
asks the log's dict, and, when the log says nothing of that prefix, the
snapshot's section (a bisect in C). Counts are kept as records come in, so
``/metrics`` never scans.

Writers decide and write holding :meth:`BanStore.locked` (a thread lock and an
``flock`` on ``lock``), so a decision made on a prefix's state is never
overtaken by another process's write. A write that fails part-way (a full
disk) is cut back to the last whole record before the error is raised, so no
reader ever sees a torn record.

A new generation replaces the current one when the log outgrows
:data:`FOLD_RECORDS` (the log is folded into a new snapshot) and when the
operator publishes a new snapshot (:meth:`BanStore.install`). The new files
are written first; then the old log gets a final :data:`~.records.NEXT`
record, so every worker notices with the ``fstat`` it makes anyway, maps the
new generation and drops the old one. Records that must outlive a generation
are carried into the new log: lifts (they must keep beating an operator line
older than them) and, in a cluster, this replica's own bans the operator has
not listed yet, the newest :data:`OWN_CARRIED` of them. Every worker mirrors
the log in its dicts, so own bans carried without a bound (a flood while the
operator is down) would grow each worker's memory for as long as the outage
lasts: a fold puts the older ones into the shared snapshot as plain bans
(still enforced, in memory once per pod), logs it, and counts them in the
snapshot's metadata (:meth:`BanStore.own_folded`, a gauge). What such a ban
loses is being carried over the operator's next list: if that list does not
hold it yet (its ledger row not yet read), it is enforced again when a later
list does.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from blacklist_contract.lines import FOREVER
from blacklist_contract.prefixes import IPV4, IPV6, Prefix, covering, mask
from blacklist_service.bans.files import (
    CURRENT_FILE,
    LOCK_FILE,
    log_path,
    snapshot_path,
    write_current,
    write_whole,
)
from blacklist_service.bans.records import (
    LIFT,
    LISTED,
    NEXT,
    OWN,
    RECORD_SIZE,
    REMOVED,
    Record,
    decode,
    encode,
    next_generation,
)
from blacklist_service.bans.snapshot import SectionView, Snapshot, SnapshotWriter, merged
from blacklist_service.bans.values import (
    REMOVED_VALUE,
    carried_records,
    extends,
    fold_updates,
    is_active,
    key_of,
    lift_value,
    lifted_at,
    newest_own,
    prefix_of,
    with_bans,
)

# The log is folded into a new snapshot past this many records: each worker's dict
# stays small (about 100 bytes a record) and a fold is rare.
FOLD_RECORDS = 32_768
# At most this many own bans are carried from one generation's log to the next; the
# older ones are folded into the snapshot. With it the log, and so each worker's
# dicts, stays under about ``2 * (FOLD_RECORDS + OWN_CARRIED)`` records (some 13 MB).
OWN_CARRIED = FOLD_RECORDS
# The snapshot metadata key counting own bans folded for want of room since the
# operator's last list (an operator snapshot starts it again at 0).
OWN_FOLDED_KEY = "own_folded"
logger = logging.getLogger("blacklist_service.bans")
# (length, netmask, the snapshot section's find, if it has that section)
Probe = tuple[int, int, Callable[[int], int | None] | None]


def _finder(section: SectionView | None) -> Callable[[int], int | None] | None:
    return None if section is None else section.find


class BanStore:
    """Bans, expiries and lifts by prefix, shared by the processes of one replica."""

    def __init__(self, directory: Path, carry_own: bool = False) -> None:
        self.directory = directory
        # In a cluster, own bans stay in the log until the operator's list holds them.
        self.carry_own = carry_own
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_descriptor = os.open(
            directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        # Re-entrant, so ban() may run inside a caller's locked(); the flock is taken
        # once per outermost holder (a nested LOCK_UN would release the outer's lock).
        self._write_lock = threading.RLock()
        self._depth = 0
        self._read_lock = threading.RLock()
        self.generation = 0
        self._log_descriptor = -1
        self._retired: list[int] = []
        self._offset = 0
        self._snapshot: Snapshot | None = None
        self._logs: dict[int, dict[int, int]] = {IPV4: {}, IPV6: {}}
        self._own: dict[tuple[int, int], int] = {}  # (version, key) -> second written
        self._listed: set[tuple[int, int]] = set()
        self._probes: dict[int, list[Probe]] = {IPV4: [], IPV6: []}
        self._lengths: dict[int, set[int]] = {IPV4: set(), IPV6: set()}
        self._entries = 0
        self._lifted = 0
        self._fold_at = FOLD_RECORDS
        with self.locked(refresh=False):
            self._open_current(create=True)

    # Reading -------------------------------------------------------------------------

    def _open_current(self, create: bool = False) -> None:
        """Open the generation ``current`` names; with ``create``, make the first if none is."""
        for _ in range(100):
            try:
                generation = int((self.directory / CURRENT_FILE).read_text().strip())
            except (FileNotFoundError, ValueError):
                generation = 0
            if generation and log_path(self.directory, generation).exists():
                break
            if not create:
                time.sleep(0.01)  # being replaced right now: look again
                continue
            generation = 1
            writer = SnapshotWriter(self.directory)
            os.replace(writer.finish({}), snapshot_path(self.directory, generation))
            log_path(self.directory, generation).touch()
            write_current(self.directory, generation)
            break
        else:
            raise RuntimeError(f"{self.directory} names no ban-store generation that exists")
        self._adopt(generation)

    def _adopt(self, generation: int) -> None:
        """Map generation ``generation`` and read its log from the start."""
        try:
            snapshot = Snapshot(snapshot_path(self.directory, generation))
            descriptor = os.open(
                log_path(self.directory, generation),
                os.O_RDWR | os.O_APPEND | os.O_CLOEXEC,
            )
        except FileNotFoundError:
            # Replaced again before this worker looked: follow ``current`` instead.
            self._open_current()
            return
        # Another thread of this process may be reading the old log or snapshot right
        # now: the log's descriptor is closed one generation later (closing it now
        # could hand its number to another file under that thread), and the snapshot's
        # mapping goes when the last view of it does.
        for retired in self._retired:
            os.close(retired)
        self._retired = [self._log_descriptor] if self._log_descriptor >= 0 else []
        self.generation = generation
        self._snapshot = snapshot
        self._log_descriptor = descriptor
        self._offset = 0
        self._logs = {IPV4: {}, IPV6: {}}
        self._own = {}
        self._listed = set()
        self._entries = snapshot.count
        self._lifted = 0
        self._rebuild_probes()
        self.refresh()

    def _rebuild_probes(self) -> None:
        assert self._snapshot is not None
        for version in (IPV4, IPV6):
            lengths = {length for v, length in self._snapshot.sections if v == version}
            lengths |= {key & 0xFF for key in self._logs[version]}
            self._lengths[version] = lengths
            sections = self._snapshot.sections
            self._probes[version] = [
                (length, mask(version, length), _finder(sections.get((version, length))))
                for length in sorted(lengths)
            ]

    def refresh(self) -> None:
        """Take in records other processes appended since the last look."""
        if os.fstat(self._log_descriptor).st_size <= self._offset:
            return
        with self._read_lock:
            size = os.fstat(self._log_descriptor).st_size
            whole = (size - self._offset) // RECORD_SIZE * RECORD_SIZE
            if whole <= 0:
                return
            data = os.pread(self._log_descriptor, whole, self._offset)
            whole = len(data) - len(data) % RECORD_SIZE
            for record in decode(memoryview(data)[:whole]):
                if record.kind == NEXT:
                    self._adopt(record.value)
                    return
                self._take(record)
            self._offset += whole

    def _take(self, record: Record) -> None:
        """Mirror one record: the dicts, the probes and the counts."""
        version = record.prefix.version
        key = key_of(record.prefix)
        log = self._logs[version]
        previous = log.get(key)
        if previous is None and self._snapshot is not None:
            previous = self._snapshot.find(record.prefix)
        if record.kind == LIFT:
            value = lift_value(record.value)
        elif record.kind == REMOVED:
            value = REMOVED_VALUE
        else:
            value = record.value
        log[key] = value
        if record.prefix.length not in self._lengths[version]:
            self._rebuild_probes()
        ident = (version, key)
        if record.kind == OWN:
            self._own[ident] = record.written
        else:
            self._own.pop(ident, None)
        if record.kind == LISTED:
            self._listed.add(ident)
        else:
            self._listed.discard(ident)
        self._entries += (value >= 0) - (previous is not None and previous >= 0)
        self._lifted += (value < REMOVED_VALUE) - (
            previous is not None and previous < REMOVED_VALUE
        )

    def banned(self, version: int, number: int) -> bool:
        """Whether the address ``number`` of ``version`` lies in a prefix banned now."""
        # refresh()'s own first test, inlined: this runs on every request.
        if os.fstat(self._log_descriptor).st_size > self._offset:
            self.refresh()
        log = self._logs[version]
        for length, netmask, find in self._probes[version]:
            network = number & netmask
            value = log.get(network << 8 | length)
            if value is None:
                if find is None:
                    continue
                value = find(network)
                if value is None:
                    continue
            if value == FOREVER or value > time.time():
                return True
        return False

    def value(self, prefix: Prefix) -> int | None:
        """The latest value of ``prefix`` (expiry, a lift, ``-1`` removed), or None."""
        self.refresh()
        return self._value(prefix)

    def _value(self, prefix: Prefix) -> int | None:
        found = self._logs[prefix.version].get(key_of(prefix))
        if found is None and self._snapshot is not None:
            found = self._snapshot.find(prefix)
        return found

    def state(self, prefix: Prefix) -> tuple[int | None, bool]:
        """The latest value of ``prefix`` and whether it is a ban this replica made."""
        return self.value(prefix), (prefix.version, key_of(prefix)) in self._own

    def listed(self) -> list[Prefix]:
        """The prefixes whose latest record is an operator-listed ban in the log."""
        self.refresh()
        return [prefix_of(version, key) for version, key in self._listed]

    def lengths(self, version: int) -> list[int]:
        """The prefix lengths of ``version`` the store holds entries of."""
        self.refresh()
        return [probe[0] for probe in self._probes[version]]

    def covering(self, version: int, number: int, lengths: Iterable[int]) -> list[Prefix]:
        """The prefixes of the address at every length held, and at ``lengths``."""
        wanted = set(self.lengths(version)) | set(lengths)
        return [covering(version, number, length) for length in sorted(wanted)]

    def counts(self) -> tuple[int, int]:
        """Entries held as bans (some may have expired) and prefixes held as lifted; O(1)."""
        self.refresh()
        return self._entries, self._lifted

    def __len__(self) -> int:
        return self.counts()[0]

    def own_folded(self) -> int:
        """Own bans folded in past :data:`OWN_CARRIED` since the operator's last list."""
        self.refresh()
        assert self._snapshot is not None
        return int(self._snapshot.metadata.get(OWN_FOLDED_KEY, 0))

    def own_carried(self) -> int:
        """Own bans the log carries (the operator's list does not hold them yet); O(1)."""
        self.refresh()
        return len(self._own)

    def operator_generation(self) -> str | None:
        """The generation of the operator's snapshot this store holds, or None."""
        self.refresh()
        assert self._snapshot is not None
        found = self._snapshot.metadata.get("operator_generation")
        return None if found is None else str(found)

    # Writing -------------------------------------------------------------------------

    @contextmanager
    def locked(self, refresh: bool = True) -> Iterator[None]:
        """Hold the store against every other writer, in this process and in others."""
        with self._write_lock:
            if self._depth == 0:
                fcntl.flock(self._lock_descriptor, fcntl.LOCK_EX)
            self._depth += 1
            try:
                if refresh:
                    self.refresh()
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._lock_descriptor, fcntl.LOCK_UN)

    def _append(self, records: list[Record]) -> None:
        """Write ``records`` (the caller holds :meth:`locked`) and take them in at once."""
        if not records:
            return
        start = self._offset
        with self._read_lock:  # so another thread's refresh() does not take them twice
            write_whole(self._log_descriptor, b"".join(encode(r) for r in records), start)
            for record in records:
                self._take(record)
            self._offset = start + len(records) * RECORD_SIZE
        if self._offset // RECORD_SIZE > self._fold_at:
            self.fold()

    def append(self, records: Iterable[Record]) -> None:
        """Append records as given (the caller decided them holding :meth:`locked`)."""
        with self.locked():
            self._append(list(records))

    def ban(self, bans: Iterable[tuple[Prefix, int]], kind: int = OWN) -> list[Prefix]:
        """Ban each prefix until its time (``0``: for ever) unless it is banned longer already.

        Returns the prefixes that were not banned before (in the order given). A
        lifted or expired prefix is banned again.
        """
        with self.locked():
            now = time.time()
            records: dict[Prefix, int] = {}
            fresh: list[Prefix] = []
            for prefix, until in bans:
                stored = self._value(prefix)
                current = records.get(prefix, stored)
                if extends(current, until, now):
                    if not is_active(stored, now) and prefix not in records:
                        fresh.append(prefix)
                    records[prefix] = until
            written = int(now)
            self._append([Record(kind, p, until, written) for p, until in records.items()])
            return fresh

    def lift(self, lifts: Iterable[tuple[Prefix, int, int]]) -> list[Prefix]:
        """Record each ``(prefix, lift id, Unix milliseconds)`` lift unless a later one is.

        Lifts are ordered by id (the order they committed in), never by time. A
        ban this replica made after the lift's time stands. Returns the
        prefixes whose lift was written.
        """
        with self.locked():
            records: dict[Prefix, int] = {}
            for prefix, lift_id, at in lifts:
                previous = lifted_at(self._value(prefix))
                if prefix in records:
                    previous = records[prefix]
                if previous is not None and previous >= lift_id:
                    continue
                written = self._own.get((prefix.version, key_of(prefix)))
                if written is not None and written * 1000 > at:
                    continue
                records[prefix] = lift_id
            now = int(time.time())
            self._append([Record(LIFT, p, lift_id, now) for p, lift_id in records.items()])
            return list(records)

    # Generations ---------------------------------------------------------------------

    def _carried(self, keep_own: bool, lifts_seen: int, incoming: Snapshot | None) -> list[Record]:
        """The records of the current log a new generation must keep."""
        find = None if incoming is None else incoming.find
        return carried_records(self._logs, self._own, keep_own, lifts_seen, find, time.time())

    def _switch(self, snapshot_file: Path, carried: list[Record]) -> None:
        """Make a finished snapshot and ``carried`` the next generation (holding the lock)."""
        old = self.generation
        generation = old + 1
        os.replace(snapshot_file, snapshot_path(self.directory, generation))
        new_log = log_path(self.directory, generation)
        descriptor = os.open(new_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_whole(descriptor, b"".join(encode(r) for r in carried), 0)
            # The old log's last record sends every worker to the new generation.
            write_whole(self._log_descriptor, encode(next_generation(generation)), self._offset)
        except OSError:
            new_log.unlink(missing_ok=True)
            snapshot_path(self.directory, generation).unlink(missing_ok=True)
            raise
        finally:
            os.close(descriptor)
        write_current(self.directory, generation)
        with self._read_lock:
            self._adopt(generation)
        self._fold_at = max(FOLD_RECORDS, 2 * len(carried))
        snapshot_path(self.directory, old).unlink(missing_ok=True)
        log_path(self.directory, old).unlink(missing_ok=True)

    def fold(self, bulk: dict[Prefix, int] | None = None) -> None:
        """Fold the log (and ``bulk`` bans) into a new snapshot; keep what must outlive it.

        Own bans past :data:`OWN_CARRIED` (the oldest) are folded in as plain bans.
        """
        with self.locked():
            assert self._snapshot is not None
            now = time.time()
            own = self._own
            metadata = dict(self._snapshot.metadata)
            if self.carry_own and len(own) > OWN_CARRIED:
                own = newest_own(own, OWN_CARRIED)
                folded = len(self._own) - len(own)
                metadata[OWN_FOLDED_KEY] = int(metadata.get(OWN_FOLDED_KEY, 0)) + folded
                logger.warning(
                    "%d own bans not yet in the operator's list folded into the snapshot "
                    "(more than %d carried: is the operator down?); still enforced",
                    folded,
                    OWN_CARRIED,
                )
            updates = fold_updates(self._logs, own, self.carry_own, now)
            carried = carried_records(self._logs, own, self.carry_own, 0, None, now)
            if bulk:
                updates = with_bans(updates, bulk)
                carried = [record for record in carried if record.prefix not in bulk]
            writer = SnapshotWriter(self.directory)
            try:
                for section in merged(self._snapshot, updates):
                    writer.add(section)
                path = writer.finish(metadata)
            except BaseException:
                writer.abandon()
                raise
            self._switch(path, carried)

    def ban_in_bulk(self, bans: Iterable[tuple[Prefix, int]]) -> list[Prefix]:
        """:meth:`ban` for a load of many bans: straight into a new snapshot, one fold.

        Each ban is taken as :meth:`ban` would (only if it bans longer than what
        the store holds); none goes through the log, so a load of a million bans
        costs a few folds rather than a record each and a fold every
        :data:`FOLD_RECORDS`. Returns the prefixes that were not banned before.
        """
        with self.locked():
            now = time.time()
            chosen: dict[Prefix, int] = {}
            fresh: list[Prefix] = []
            for prefix, until in bans:
                stored = self._value(prefix)
                if extends(chosen.get(prefix, stored), until, now):
                    if not is_active(stored, now) and prefix not in chosen:
                        fresh.append(prefix)
                    chosen[prefix] = until
            if chosen:
                self.fold(chosen)
            return fresh

    def new_snapshot(self) -> SnapshotWriter:
        """A writer for an operator snapshot, to :meth:`install` once filled."""
        return SnapshotWriter(self.directory)

    def install(
        self,
        writer: SnapshotWriter,
        operator_generation: str,
        lifts_seen: int,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Replace the list with the operator's snapshot; keep own bans and newer lifts.

        The operator's list is the truth for the bans it listed; this replica's
        own bans it does not hold yet stay, and so do lifts later than its
        ``lifts_seen``. ``then`` runs holding the store right after the switch
        (the head's lines go in before any other writer, or a lookup after its
        next ``fstat``, can miss them).
        """
        path = writer.finish({"operator_generation": operator_generation})
        with self.locked():
            incoming = Snapshot(path)
            carried = self._carried(True, lifts_seen, incoming)
            del incoming
            self._switch(path, carried)
            if then is not None:
                then()

    def close(self) -> None:
        """Release the files."""
        for retired in self._retired:
            os.close(retired)
        os.close(self._log_descriptor)
        os.close(self._lock_descriptor)
        self._log_descriptor = -1
