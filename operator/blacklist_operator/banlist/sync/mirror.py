"""One instance's ban list in memory, mirrored into ConfigMaps (blocking): load, read, write.

A prefix is banned when the ledger holds a row from an address it covers (with
``spec.banPrefixLengths``; the allowlist, by exact address, bans nothing) later
than the latest lift that reaches it (``denied_access_lifts``: an address lifts
the ban covering it, a range every ban inside it) and, with ``spec.banDuration``
set, that row is younger than the duration; the ban then carries its expiry.

The list is held packed (:mod:`..core.packed`) and written as the head ``N-banlist``
and the snapshot parts ``N-banlist-1`` … (:mod:`blacklist_contract.wire`), at
the pace :mod:`..core.layout` sets: new bans go to the head, a compaction rewrites
the parts. The state that matters survives restarts in the ConfigMaps
themselves: the bans, and in annotations of the head the exact ledger cursor,
the lift cursor, the ledger table's identity and a digest of the filter the
list was built with. Parts are written before the head that names their
generation, so the head's cursors never run ahead of the bans. While a
compaction writes its parts, the ledger is still read between them, and the
new bans go out at once in a *bridge* head: the generation readers hold, its
lines plus every ban merged away since it was written (see :meth:`BanListSync.sync`),
so a compaction, seconds at millions of bans, is not in a new ban's path; nor is a
rescan, which streams the whole ledger and writes bridge heads between its fetches
(:mod:`.rescan_bridge`). Lifts are kept
in memory (they are few): a hit that reaches the ledger late, after a lift of
its prefix, stays lifted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import psycopg2

from blacklist_contract.prefixes import Prefix
from blacklist_operator.banlist.core.filters import (
    ban_of,
    filter_key,
    key_ranges,
)
from blacklist_operator.banlist.core.layout import (
    HEAD_MAX_BYTES,
    HEAD_WRITE_RATE,
    Pending,
    SnapshotTooLargeError,
    compaction_delay,
    compaction_reason,
    head_write_delay,
)
from blacklist_operator.banlist.core.packed import PackedBanList
from blacklist_operator.banlist.core.rebuild import Builder
from blacklist_operator.banlist.sync import ledger
from blacklist_operator.banlist.sync.lifts import Lifts
from blacklist_operator.banlist.sync.rescan_bridge import BanOfHit, RescanBridge
from blacklist_operator.banlist.sync.store import BanListStore
from blacklist_operator.builders.banlist import (
    ALLOWLIST_ANNOTATION,
    CURSOR_ANNOTATION,
    LEDGER_TABLE_ANNOTATION,
    LIFT_CURSOR_ANNOTATION,
    HeadState,
)
from blacklist_operator.kube.api import KubernetesApi
from blacklist_operator.model.resource import BlacklistService
from blacklist_operator.runtime.state import WrittenBanList

# One cycle reads at most this many rows, so a huge backlog cannot starve the others.
MAX_ROWS_PER_CYCLE = 200_000
# A backlog larger than this is read as a rescan: one sorted build and one compaction
# instead of a merge and a snapshot per head's worth of rows.
BULK_ROWS = 500_000
# Persist a cursor that advanced over rows that changed nothing only this often.
CURSOR_SLACK = 10_000
# Expired bans leave the head at most this late (every replica already stops
# enforcing them at their expiry, which their line carries); the parts: layout.
EXPIRY_CHECK_SECONDS = 5.0
# After the ledger's lock was not free, read without it for this long before asking again.
LOCK_RETRY_SECONDS = 1.0
# A full list sheds this share of its capacity beyond the excess, the oldest bans first.
EVICTION_HEADROOM = 0.01
# A snapshot too large for the parts the contract allows sheds this share of the oldest.
_SHED_SHARE = 0.05
# A bridge head (the bans merged away since the last compaction, written with the
# generation readers hold while the next one's parts are written) is kept under this
# many bytes of lines; a larger backlog (a rescan, a burst read at once) goes without
# one and reaches the replicas with the new generation, as any ban did before bridges.
BRIDGE_MAX_BYTES = 640 * 1024
# Between two parts, a bridge head is written at most this often.
BRIDGE_INTERVAL_SECONDS = 0.2
# Between two parts, at most this many ledger rows are read (a few hundred kilobytes of
# lines at most), and none once the head holds HEAD_MAX_BYTES: the head that names the
# new generation stays far under a ConfigMap's 1 MiB.
BRIDGE_READ_ROWS = 4096


@dataclass(frozen=True)
class SyncReport:
    """What one cycle found."""

    count: int
    cursor: int
    table_exists: bool
    # Rows past the exact cursor were read without the ledger's lock: read again soon.
    behind: bool = False
    # Ledger ids past the exact cursor (the table's highest id when last read, minus it).
    rows_behind: int = 0
    # ``time`` (Unix ms) of the oldest row written to the ConfigMaps this cycle, if any.
    oldest_new_row_ms: int | None = None
    # The configured limit, and the bans evicted (oldest first) since the list last fit.
    capacity: int = 0
    evicted: int = 0
    # Bans evicted by this cycle (for the counter).
    evicted_now: int = 0
    # Seconds until held-back changes may be written (None: nothing held back).
    write_in: float | None = None


class BanListSync:
    """The ban list of one BlacklistService, kept in memory and mirrored into ConfigMaps."""

    def __init__(self, api: KubernetesApi, written: WrittenBanList, capacity: int) -> None:
        self._api = api
        self._written = written
        self.capacity = capacity
        self._reset()

    def _reset(self) -> None:
        self.banlist = PackedBanList()
        # Every ledger id at or below ``cursor`` has been read; ``seen`` may run ahead
        # of it through reads made without the lock, which are read again later.
        self.cursor = 0
        self.seen = 0
        self.lifts = Lifts()
        self.table_oid = 0
        self.filter_key: str | None = None
        self._checked_expiry = 0.0
        self._lock_retry_at = 0.0
        self._persisted_cursor = 0
        # What the ConfigMaps hold, and writing them.
        self.store = BanListStore(self._api, self._written)
        self._head_changed = False
        self._snapshot_changed = False
        self._lifted = False
        self._next_expiry: int | None = None
        self._oldest_unwritten_ms: int | None = None
        self.evicted = 0
        self._evicted_now = 0
        # Why each compaction since the last pass ran, for the log.
        self.compactions: list[str] = []
        # A rescan that failed half-way left the list incomplete: read it back first.
        self._broken = False
        # The bans merged away from the head since the last compaction (None: too many).
        self._bridge: dict[Prefix, int] | None = {}
        self._bridge_bytes = 0
        # The ledger's connection while a pass runs (a compaction reads it between parts).
        self._connection: Any = None
        self._bridge_written_at = 0.0
        self._bridge_pending = False

    # Loading ----------------------------------------------------------------------

    def load(self, resource: BlacklistService) -> None:
        """Continue from the ConfigMaps a previous run wrote, if any."""
        self._reset()
        self.banlist = PackedBanList(resource.spec.ban_duration is not None)
        annotations = self.store.read(resource, self.banlist)
        if annotations is None:
            return
        self.cursor = self.seen = self._persisted_cursor = int(
            annotations.get(CURSOR_ANNOTATION, "0")
        )
        self.lifts = Lifts(int(annotations.get(LIFT_CURSOR_ANNOTATION, "0")))
        self.table_oid = int(annotations.get(LEDGER_TABLE_ANNOTATION, "0"))
        # An incomplete snapshot (a compaction cut short, or the text shards of an
        # operator before snapshots) is rebuilt from the ledger at the first pass.
        self.filter_key = annotations.get(ALLOWLIST_ANNOTATION) if self.store.complete else None
        if self.banlist.expiring:
            self._next_expiry = self.banlist.oldest_stamp()

    # Incremental sync -------------------------------------------------------------

    def sync(self, resource: BlacklistService, connection: Any, *, bulk: bool = True) -> SyncReport:
        """Read the ledger and the lifts past their cursors and write what changed.

        With ``bulk``, a backlog past ``BULK_ROWS`` is read as a rescan (not again
        right after one, whose cursor may have stayed behind for want of the lock).
        """
        self._connection = connection
        try:
            return self._sync(resource, connection, bulk)
        finally:
            self._connection = None

    def _sync(self, resource: BlacklistService, connection: Any, bulk: bool) -> SyncReport:
        if self._broken:
            self.load(resource)
        if self._filter(resource) != self.filter_key:
            return self.rescan(resource, connection)
        if not self.lifts.loaded:
            # After a restart: every lift again (they are few), to filter late hits.
            self.lifts.restart()
        rows = 0
        table_exists = True
        newest = self.cursor
        while rows < MAX_ROWS_PER_CYCLE:
            read = None
            start = self.cursor
            if time.monotonic() >= self._lock_retry_at:
                read = ledger.read_hits(connection, self.cursor, exact=True)
                if read.exact and read.table_exists and self._recreated(read):
                    return self.rescan(resource, connection, reset=True)
                if bulk and read.exact and read.newest_id - self.cursor > BULK_ROWS:
                    return self.rescan(resource, connection)
                if not read.exact:
                    # While the lock is asked for, new inserts queue behind the request:
                    # do not ask again at every pass while somebody holds one open.
                    self._lock_retry_at = time.monotonic() + LOCK_RETRY_SECONDS
            if read is None or not read.exact:
                # Somebody holds an insert open: read ahead from ``seen`` without moving the
                # exact cursor, so the rows before it are read again once the lock is free.
                start = max(self.seen, self.cursor)
                read = ledger.read_hits(connection, start, exact=False)
            table_exists = read.table_exists
            rows += len(read.rows)
            newest = max(newest, read.newest_id)
            self._take_read(read, start, resource)
            if read.exact:
                self.cursor, self.table_oid = read.last_id, read.table_oid
            if self.banlist.head_bytes > HEAD_MAX_BYTES:
                # Keep the head's objects few: move it into the columns now, write later.
                self._merge()
                self._snapshot_changed = True
            if not read.full:
                break
        self._apply_lifts(connection, resource)
        self._expire()
        return self._report(resource, table_exists, max(0, newest - self.cursor))

    def _take_read(
        self,
        read: ledger.TableRead,
        start: int,
        resource: BlacklistService,
    ) -> bool:
        """Add the hits of one read (``start``: the id it read past); whether the list changed."""
        if read.rows and start >= self.seen:
            # Not a read again of rows already read ahead: these are new to the list.
            oldest = min(ms for _, ms in read.rows)
            if self._oldest_unwritten_ms is None or oldest < self._oldest_unwritten_ms:
                self._oldest_unwritten_ms = oldest
        changed = self._add_hits(read.rows, resource)
        self.seen = max(self.seen, read.last_id)
        return changed

    def _merge(self, now: int | None = None) -> None:
        """Merge the head into the columns, keeping its bans in the bridge while there is room."""
        if self._bridge is not None:
            self._bridge_bytes += self.banlist.head_bytes
            if self._bridge_bytes > BRIDGE_MAX_BYTES:
                self._bridge = None
            else:
                self._bridge.update(self.banlist.head)
        self.banlist.merge(now)

    def _report(
        self, resource: BlacklistService, table_exists: bool, rows_behind: int
    ) -> SyncReport:
        written_oldest = self._oldest_unwritten_ms
        write_in = self.write(resource)
        if write_in is None:
            self._oldest_unwritten_ms = None
        evicted_now, self._evicted_now = self._evicted_now, 0
        return SyncReport(
            len(self.banlist),
            self.cursor,
            table_exists,
            behind=self.seen > self.cursor,
            rows_behind=rows_behind,
            oldest_new_row_ms=written_oldest if write_in is None else None,
            capacity=self.capacity,
            evicted=self.evicted,
            evicted_now=evicted_now,
            write_in=write_in,
        )

    def _filter(self, resource: BlacklistService) -> str:
        spec = resource.spec
        return filter_key(spec.allowlist, spec.ban_duration, spec.ban_prefix_lengths)

    def _recreated(self, read: ledger.TableRead) -> bool:
        """Whether the ledger is not the one the cursor counts in (table recreated, new volume)."""
        return read.newest_id < self.cursor or (self.table_oid not in (0, read.table_oid))

    def _add_hits(self, hits: list[tuple[int, int]], resource: BlacklistService) -> bool:
        """Ban the prefixes of ``hits`` as the spec says; whether any line changed."""
        changed = False
        ban_of_hit = self._ban_maker(resource)
        for key, ms in hits:
            ban = ban_of_hit(key, ms)
            if ban is not None and self.banlist.add(*ban):
                self._head_changed = changed = True
        return changed

    def _apply_lifts(self, connection: Any, resource: BlacklistService) -> None:
        """Take in new lifts and drop the bans they lift."""
        lengths = resource.spec.ban_prefix_lengths
        seen = self.lifts.seen
        fresh = self.lifts.read(connection, lengths)
        if self.lifts.seen != seen:
            self._head_changed = True  # The lifts-seen moved: replicas may drop what it covers.
        for prefix in self.lifts.lifted(connection, self.banlist, fresh, lengths):
            _, in_sections = self.banlist.remove(prefix)
            if self._bridge is not None:
                self._bridge.pop(prefix, None)  # A bridge head must not list it again.
            self._head_changed = True
            self._lifted = self._lifted or in_sections

    def _expire(self) -> None:
        if not self.banlist.expiring:
            return
        if time.monotonic() - self._checked_expiry < EXPIRY_CHECK_SECONDS:
            return
        self._checked_expiry = time.monotonic()
        if self.banlist.drop_expired_head(int(time.time())):
            self._head_changed = True

    # Rescan -----------------------------------------------------------------------

    def rescan(
        self, resource: BlacklistService, connection: Any, *, reset: bool = False
    ) -> SyncReport:
        """Rebuild the list from the whole ledger and every lift.

        This drops rows deleted from the ledger and applies a changed allowlist,
        duration or prefix lengths. The ledger is streamed and the old list let
        go before the new one is built, so memory holds one list; if the rebuild
        fails half-way, the next pass reads the list back from the ConfigMaps.
        The bans the head carried stay in the head, so a list that did not change
        is not written again; one that did is compacted. Rows committed while the
        ledger streams go out in bridge heads (:meth:`_rescan_bridge`).
        """
        spec = resource.spec
        if self._broken:
            self.load(resource)
        if reset:
            self.cursor = self.seen = self.table_oid = 0
        newest, exact = ledger.newest_hit_id(connection)
        if newest < self.cursor:
            self.cursor = self.seen = 0
        key = self._filter(resource)
        bridge = self._rescan_bridge(resource, key)
        self.lifts.restart()
        seen = self.lifts.seen
        self.lifts.read(connection, spec.ban_prefix_lengths)
        if self.lifts.seen != seen:
            self._head_changed = True
        before = self.banlist.digest()
        head = dict(self.banlist.head)
        self._broken = True
        # The rebuilt list may drop bans (deleted rows, a new allowlist): the bridge
        # is made again from what it still holds once it is built.
        self._bridge = None
        self.banlist = PackedBanList(spec.ban_duration is not None)
        ban = self._ban_maker(resource)
        builder = Builder(spec.ban_duration is not None)
        for address, ms in ledger.stream_latest_hits(connection, bridge):
            made = ban(address, ms)
            if made is not None:
                builder.add(*made)
        # The sort that ends the build takes seconds at millions of bans: bridge it too.
        self.banlist = builder.finish(None if bridge is None else lambda: bridge(connection))
        self.banlist.hold_in_head(head)
        self._broken = False
        self._evict()
        if before != self.banlist.digest() or self.store.generation == 0:
            self._snapshot_changed = True
        if key != self.filter_key:
            self._head_changed = True  # The head's digest of the filter, at least.
        self.filter_key = key
        if exact:
            # Rows up to ``newest`` were all committed before the stream began.
            self.cursor = max(self.cursor, newest)
        self.seen = max(self.seen, self.cursor, bridge.seen if bridge is not None else 0)
        self._bridge_after_rescan(bridge)
        self._checked_expiry = time.monotonic()
        self._lifted = False
        # Rows committed during the rescan are read into the list by the incremental path.
        return self.sync(resource, connection, bulk=False)

    def _ban_maker(self, resource: BlacklistService) -> BanOfHit:
        """The ban a hit (address key, Unix ms) makes now, by the spec and the lifts read."""
        spec = resource.spec
        ranges = key_ranges(spec.allowlist)
        lengths, duration = spec.ban_prefix_lengths, spec.ban_duration
        lifted_at, now = self.lifts.time_of, int(time.time())
        return lambda key, ms: ban_of(key, ms, ranges, lengths, duration, lifted_at, now)

    def _rescan_bridge(self, resource: BlacklistService, key: str) -> RescanBridge | None:
        """What sends new bans while the rescan streams, if the replicas' list allows one.

        None when the filter changes (the lines would be read with another
        meaning), when there is no list yet or the ledger was recreated, and
        when the lines replicas hold beyond their generation are not known.
        """
        if key != self.filter_key or self.store.parts is None or self._bridge is None:
            return None
        if self.cursor == 0 and self._persisted_cursor > 0:
            return None  # The ledger is not the one the list was read from.
        return RescanBridge(
            self.store,
            resource,
            lines={**self._bridge, **self.banlist.head},
            new={},
            state=replace(self._head_state(), cursor=self._persisted_cursor),
            ban=self._ban_maker(resource),
            expiry=self.banlist.expiry,
            seen=max(self.seen, self.cursor),
            interval=BRIDGE_INTERVAL_SECONDS,
            max_bytes=BRIDGE_MAX_BYTES,
            read_rows=BRIDGE_READ_ROWS,
            write_rate=HEAD_WRITE_RATE,
            written_at=self.store.written.head_written_at,
            written_bytes=self.store.written.last_head_bytes,
        )

    def _bridge_after_rescan(self, bridge: RescanBridge | None) -> None:
        """The next compaction's bridge: the rescan's lines the list still holds, its new bans."""
        if bridge is None:
            return
        kept = {prefix: stamp for prefix, stamp in bridge.lines.items() if prefix in self.banlist}
        kept.update(bridge.new)
        size = sum(bridge.line_bytes(prefix, stamp) for prefix, stamp in kept.items())
        if size <= BRIDGE_MAX_BYTES:
            self._bridge, self._bridge_bytes = kept, size

    def _evict(self, limit: int | None = None) -> None:
        """Drop the oldest bans beyond ``limit`` (the capacity), merging the head first.

        Past the capacity the list goes down to the capacity less a hundredth
        (:data:`EVICTION_HEADROOM`), not to the capacity itself: a full list under
        a flood would otherwise be merged, scanned and compacted for every new ban.
        """
        full = self.capacity - max(1, int(self.capacity * EVICTION_HEADROOM))
        target = limit if limit is not None else full
        limit = self.capacity if limit is None else limit
        if len(self.banlist) <= limit:
            if len(self.banlist) < full:
                self.evicted = 0  # Room again (expiries, lifts): no longer full.
            return
        evicted = self.banlist.evict(max(0, target))
        self.evicted += evicted
        self._evicted_now += evicted
        self._snapshot_changed = True

    # Writing ----------------------------------------------------------------------

    def write(self, resource: BlacklistService, *, force: bool = False) -> float | None:
        """Write what changed, as the layout policy says; seconds until a held-back write.

        A compaction writes every part, then the head, then deletes the parts no
        longer needed. Otherwise the head alone is written, at the pace
        :func:`..core.layout.head_write_delay` sets.
        """
        self._snapshot_changed = self._snapshot_changed or force
        now = time.monotonic()
        head_bytes = self.banlist.head_bytes
        expired = self._next_expiry is not None and self._next_expiry <= int(time.time())
        pending = Pending(
            head_bytes=head_bytes,
            head_count=len(self.banlist.head),
            head_changed=self._head_changed,
            snapshot_changed=self._snapshot_changed or self.store.parts is None,
            lifted=self._lifted,
            expired=expired,
            over_capacity=len(self.banlist) > self.capacity,
        )
        reason = compaction_reason(self.store.written, pending, now)
        if reason is not None:
            self._compact(resource)
            self.compactions.append(
                f"{reason}: {len(self.banlist)} entries in {self.store.parts} parts"
            )
            return None
        held = compaction_delay(self.store.written, pending, now)
        cursor_lag = self.cursor - self._persisted_cursor
        if not (self._head_changed or cursor_lag >= CURSOR_SLACK):
            return held
        delay = head_write_delay(self.store.written, now)
        if delay > 0:
            return delay if held is None else min(delay, held)
        self._write_head(resource)
        return held

    def _head_state(self) -> HeadState:
        """The head's totals and cursors (the store fills in the snapshot's place)."""
        return HeadState(
            count=len(self.banlist),
            capacity=self.capacity,
            generation=0,
            parts=0,
            cursor=self.cursor,
            lift_cursor=self.lifts.cursor,
            lifts_seen=self.lifts.seen,
            ledger_table=self.table_oid,
            filter_key=self.filter_key or "",
        )

    def _write_head(self, resource: BlacklistService) -> None:
        self.store.write_head(resource, self.banlist, self._head_state())
        self._head_written()

    def _head_written(self) -> None:
        self._persisted_cursor = self.cursor
        self._head_changed = False
        self._oldest_unwritten_ms = None

    def _compact(self, resource: BlacklistService) -> None:
        """Write the whole list as a new snapshot generation and a head of what came meanwhile.

        Between parts, the ledger is read and new bans go out in a bridge head
        (:meth:`_between_parts`); the head that names the new generation carries
        them too.
        """
        self._evict()
        self._merge(int(time.time()))
        # The bans merged away may include some the last head write did not carry yet.
        self._bridge_pending = bool(self._bridge)
        self._bridge_written_at = 0.0
        while True:
            try:
                self.store.write_snapshot(
                    resource,
                    self.banlist,
                    self._head_state(),
                    lambda: self._between_parts(resource),
                )
                break
            except SnapshotTooLargeError:
                # Longer prefixes compress less: what fits is fewer than the capacity.
                self._evict(len(self.banlist) - max(1, int(len(self.banlist) * _SHED_SHARE)))
        self._head_written()
        self._bridge, self._bridge_bytes = {}, 0
        self._snapshot_changed = False
        self._lifted = False
        self._next_expiry = self.banlist.oldest_stamp() if self.banlist.expiring else None

    def _between_parts(self, resource: BlacklistService) -> HeadState:
        """Read new hits and write them in a bridge head; the state for the new generation's head.

        The bridge head names the generation readers hold, so they apply its
        lines at once; its ledger cursor is the one last written (every row up
        to it is in what that generation and the bridge carry). A database that
        fails here ends the reads of this compaction, which goes on; the next
        pass meets the error.
        """
        connection = self._connection
        bridge = self._bridge
        if connection is None or bridge is None or self.banlist.head_bytes > HEAD_MAX_BYTES:
            return self._head_state()
        try:
            start = max(self.seen, self.cursor)
            read = ledger.read_hits(connection, start, exact=False, batch=BRIDGE_READ_ROWS)
        except (psycopg2.Error, OSError):
            self._connection = None
            return self._head_state()
        if self._take_read(read, start, resource):
            self._bridge_pending = True
        if (
            self._bridge_pending
            and self._bridge_bytes + self.banlist.head_bytes <= BRIDGE_MAX_BYTES
            and time.monotonic() >= self._bridge_written_at + BRIDGE_INTERVAL_SECONDS
        ):
            state = replace(self._head_state(), cursor=self._persisted_cursor)
            self.store.write_head(resource, self.banlist, state, self.banlist.head_text(bridge))
            self._bridge_written_at = time.monotonic()
            self._bridge_pending = False
        return self._head_state()

    def rewrite(self, resource: BlacklistService) -> None:
        """Write the whole list again (after someone edited or deleted one of its ConfigMaps)."""
        if self._broken:
            self.load(resource)
        self._compact(resource)
        self.compactions.append(
            f"restored: {len(self.banlist)} entries in {self.store.parts} parts"
        )

    def ensure_exists(self, resource: BlacklistService) -> None:
        """Create an empty ``N-banlist`` when none exists yet (it is always present)."""
        if self.store.parts is None:
            self.filter_key = None
            self.write(resource, force=True)
