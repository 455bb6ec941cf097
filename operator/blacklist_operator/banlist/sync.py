"""One instance's ban list in memory, mirrored into ConfigMaps (blocking): load, read, write.

A prefix is banned when the ledger holds a row from an address it covers (with
``spec.banPrefixLengths``; the allowlist, by exact address, bans nothing) later
than the latest lift that reaches it (``denied_access_lifts``: an address lifts
the ban covering it, a range every ban inside it) and, with ``spec.banDuration``
set, that row is younger than the duration; the ban then carries its expiry.

The list is held packed (:mod:`.packed`) and written as the head ``N-banlist``
and the snapshot parts ``N-banlist-1`` … (:mod:`blacklist_contract.wire`), at
the pace :mod:`.layout` sets: new bans go to the head, a compaction rewrites
the parts. The state that matters survives restarts in the ConfigMaps
themselves: the bans, and in annotations of the head the exact ledger cursor,
the lift cursor, the ledger table's identity and a digest of the filter the
list was built with. Parts are written before the head that names their
generation, so the head's cursors never run ahead of the bans. Lifts are kept
in memory (they are few): a hit that reaches the ledger late, after a lift of
its prefix, stays lifted.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from blacklist_contract.lines import parse_lines
from blacklist_contract.prefixes import FULL_LENGTH, IPV6, Prefix
from blacklist_contract.wire import (
    LIFTS_SEEN_ANNOTATION,
    PART_DATA_KEY,
    SNAPSHOT_ANNOTATION,
    decode_part,
    head_name,
    part_name,
)
from blacklist_operator.apply import KubernetesApi
from blacklist_operator.banlist import ledger
from blacklist_operator.banlist.addresses import IPV6_FLAG
from blacklist_operator.banlist.filters import (
    KeyRange,
    allowed,
    ban_prefix,
    filter_key,
    key_ranges,
    lifted_ban,
    overlaps,
    stamp_of,
)
from blacklist_operator.banlist.layout import (
    HEAD_MAX_BYTES,
    Pending,
    SnapshotTooLargeError,
    Written,
    compaction_delay,
    compaction_reason,
    encode_parts,
    head_write_delay,
)
from blacklist_operator.banlist.packed import Builder, Columns, PackedBanList
from blacklist_operator.builders.banlist import (
    ALLOWLIST_ANNOTATION,
    CURSOR_ANNOTATION,
    HEAD_LINES_KEY,
    LEDGER_TABLE_ANNOTATION,
    LIFT_CURSOR_ANNOTATION,
    HeadState,
    build_banlist_head,
    build_banlist_part,
)
from blacklist_operator.model import BlacklistService
from blacklist_operator.runtime import WrittenBanList

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
# A snapshot too large for the parts the contract allows sheds this share of the oldest.
_SHED_SHARE = 0.05


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


def address_key_of(prefix: Prefix) -> int:
    """The ledger's address key (:mod:`.addresses`) of a full-length prefix."""
    return IPV6_FLAG | prefix.network if prefix.version == IPV6 else prefix.network


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
        self.lift_cursor = 0
        # Lifts applied before the last restart (their bans are already gone).
        self._lifts_applied = 0
        # The latest lift reaching each ban prefix; lifts of ranges wider than a ban.
        self.lifts: dict[Prefix, int] = {}
        self.wide_lifts: list[tuple[Prefix, int]] = []
        self.lifts_seen = 0
        self.lifts_loaded = False
        self.table_oid = 0
        self.filter_key: str | None = None
        self._checked_expiry = 0.0
        self._lock_retry_at = 0.0
        self._persisted_cursor = 0
        # What the ConfigMaps hold: None until the head was read or written.
        self._generation = 0
        self._stored_parts: int | None = None
        self._written_head = Written(0, 0, 0, 0.0, 0.0, 0)
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

    # Loading ----------------------------------------------------------------------

    def load(self, bls: BlacklistService) -> None:
        """Continue from the ConfigMaps a previous run wrote, if any."""
        self._reset()
        self.banlist = PackedBanList(bls.spec.ban_duration is not None)
        head = self._api.get("v1", "ConfigMap", bls.namespace, head_name(bls.name))
        if head is None:
            return
        annotations = (head.get("metadata") or {}).get("annotations") or {}
        data = head.get("data") or {}
        self.cursor = self.seen = self._persisted_cursor = int(
            annotations.get(CURSOR_ANNOTATION, "0")
        )
        self.lift_cursor = self._lifts_applied = int(annotations.get(LIFT_CURSOR_ANNOTATION, "0"))
        self.lifts_seen = int(annotations.get(LIFTS_SEEN_ANNOTATION, "0"))
        self.table_oid = int(annotations.get(LEDGER_TABLE_ANNOTATION, "0"))
        self.filter_key = annotations.get(ALLOWLIST_ANNOTATION)
        if "snapshot" not in data:
            # The list of an operator before snapshots (text shards N-banlist-1 …):
            # rebuilt from the ledger, its shards overwritten or deleted by the compaction.
            self._stored_parts = max(0, int(data.get("shards", "1") or 1) - 1)
            self.filter_key = None
            return
        self._generation = int(data.get("snapshot") or 0)
        self._stored_parts = int(data.get("parts") or 0)
        if not self._load_parts(bls, self._stored_parts):
            self.filter_key = None  # A compaction was cut short: rebuild from the ledger.
        bans, _ = parse_lines(data.get(HEAD_LINES_KEY) or "")
        for prefix, expiry in bans:
            self.banlist.add(prefix, expiry if self.banlist.expiring else 0)
        self._remember_head_written(len(data.get(HEAD_LINES_KEY) or ""), time.monotonic())
        if self.banlist.expiring:
            self._next_expiry = self.banlist.oldest_stamp()

    def _load_parts(self, bls: BlacklistService, parts: int) -> bool:
        """Read every part into the sections; False if one is missing or of another generation."""
        complete = True
        for index in range(1, parts + 1):
            part = self._api.get("v1", "ConfigMap", bls.namespace, part_name(bls.name, index))
            annotations = ((part or {}).get("metadata") or {}).get("annotations") or {}
            raw = ((part or {}).get("binaryData") or {}).get(PART_DATA_KEY)
            if raw is None or annotations.get(SNAPSHOT_ANNOTATION) != str(self._generation):
                complete = False
                continue
            try:
                sections = decode_part(base64.b64decode(raw))
            except ValueError:
                complete = False
                continue
            for section in sections:
                where = (section.version, section.length)
                columns = self.banlist.sections.get(where)
                if columns is None:
                    columns = self.banlist.sections[where] = Columns.empty(*where)
                columns.keys.extend(section.keys)
                if columns.low is not None and section.low is not None:
                    columns.low.extend(section.low)
                # Without a duration the hit time is not on the wire: the oldest possible.
                columns.stamps.extend(
                    section.expiries if self.banlist.expiring else [0] * len(section)
                )
        return complete

    # Incremental sync -------------------------------------------------------------

    def sync(self, bls: BlacklistService, connection: Any, *, bulk: bool = True) -> SyncReport:
        """Read the ledger and the lifts past their cursors and write what changed.

        With ``bulk``, a backlog past ``BULK_ROWS`` is read as a rescan (not again
        right after one, whose cursor may have stayed behind for want of the lock).
        """
        spec = bls.spec
        if self._broken:
            self.load(bls)
        if self._filter(bls) != self.filter_key:
            return self.rescan(bls, connection)
        if not self.lifts_loaded:
            # After a restart: every lift again (they are few), to filter late hits.
            self.lifts, self.wide_lifts, self.lift_cursor = {}, [], 0
            self.lifts_loaded = True
        ranges = key_ranges(spec.allowlist)
        rows = 0
        table_exists = True
        newest = self.cursor
        while rows < MAX_ROWS_PER_CYCLE:
            read = None
            start = self.cursor
            if time.monotonic() >= self._lock_retry_at:
                read = ledger.read_hits(connection, self.cursor, exact=True)
                if read.exact and read.table_exists and self._recreated(read):
                    return self.rescan(bls, connection, reset=True)
                if bulk and read.exact and read.newest_id - self.cursor > BULK_ROWS:
                    return self.rescan(bls, connection)
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
            if read.rows and start >= self.seen:
                # Not a read again of rows already read ahead: these are new to the list.
                oldest = min(ms for _, ms in read.rows)
                if self._oldest_unwritten_ms is None or oldest < self._oldest_unwritten_ms:
                    self._oldest_unwritten_ms = oldest
            self._add_hits(read.rows, ranges, bls)
            self.seen = max(self.seen, read.last_id)
            if read.exact:
                self.cursor, self.table_oid = read.last_id, read.table_oid
            if self.banlist.head_bytes > HEAD_MAX_BYTES:
                # Keep the head's objects few: move it into the columns now, write later.
                self.banlist.merge()
                self._snapshot_changed = True
            if not read.full:
                break
        self._apply_lifts(connection, bls)
        self._expire()
        return self._report(bls, table_exists, max(0, newest - self.cursor))

    def _report(self, bls: BlacklistService, table_exists: bool, rows_behind: int) -> SyncReport:
        written_oldest = self._oldest_unwritten_ms
        write_in = self.write(bls)
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

    def _filter(self, bls: BlacklistService) -> str:
        spec = bls.spec
        return filter_key(spec.allowlist, spec.ban_duration, spec.ban_prefix_lengths)

    def _recreated(self, read: ledger.TableRead) -> bool:
        """Whether the ledger is not the one the cursor counts in (table recreated, new volume)."""
        return read.newest_id < self.cursor or (self.table_oid not in (0, read.table_oid))

    def _lift_time(self, prefix: Prefix) -> int:
        """The latest lift that reaches the ban of ``prefix`` (-1: none)."""
        latest = self.lifts.get(prefix, -1)
        for lift, ms in self.wide_lifts:
            if ms > latest and overlaps(prefix, lift):
                latest = ms
        return latest

    def _add_hits(
        self, hits: list[tuple[int, int]], ranges: tuple[KeyRange, ...], bls: BlacklistService
    ) -> None:
        spec = bls.spec
        now = int(time.time())
        for key, ms in hits:
            if allowed(key, ranges):
                continue
            prefix = ban_prefix(key, spec.ban_prefix_lengths)
            if ms <= self._lift_time(prefix):
                continue
            stamp = stamp_of(ms, spec.ban_duration)
            if spec.ban_duration is not None and stamp <= now:
                continue
            if self.banlist.add(prefix, stamp):
                self._head_changed = True

    def _read_lifts(self, connection: Any, lengths: tuple[int, int]) -> list[tuple[Prefix, int]]:
        """Take in lifts past the lift cursor; return those not applied before (lift, ms)."""
        fresh: list[tuple[Prefix, int]] = []
        while True:
            read = ledger.read_lifts(connection, self.lift_cursor)
            for row_id, lift, ms in read.rows:
                ban = lifted_ban(lift, lengths)
                if ban is None:
                    self.wide_lifts.append((lift, ms))
                else:
                    self.lifts[ban] = max(self.lifts.get(ban, 0), ms)
                if ms > self.lifts_seen:
                    # The head's lifts-seen moves: replicas may now drop lines it covers.
                    self.lifts_seen, self._head_changed = ms, True
                if row_id > self._lifts_applied:
                    fresh.append((lift, ms))
            self.lift_cursor = read.last_id
            if not read.full:
                break
        self._lifts_applied = max(self._lifts_applied, self.lift_cursor)
        return fresh

    def _apply_lifts(self, connection: Any, bls: BlacklistService) -> None:
        """Lift each ban a new lift reaches, unless an address it covers was hit since."""
        lengths = bls.spec.ban_prefix_lengths
        fresh = self._read_lifts(connection, lengths)
        if not fresh:
            return
        targets: set[Prefix] = set()
        for lift, _ in fresh:
            ban = lifted_ban(lift, lengths)
            if ban is None:
                targets.update(self.banlist.within(lift))
            elif ban in self.banlist:
                targets.add(ban)
        if not targets:
            return
        latest: dict[Prefix, int] = {}
        if all(prefix.length == FULL_LENGTH[prefix.version] for prefix in targets):
            # Bans of single addresses: their latest hits by the ledger's address index.
            hits = ledger.latest_hits(connection, [address_key_of(prefix) for prefix in targets])
            rows: Iterable[tuple[int, int]] = hits.items()
        else:
            rows = ledger.hits_since(connection, min(ms for _, ms in fresh))
        for key, ms in rows:
            prefix = ban_prefix(key, lengths)
            if prefix in targets:
                latest[prefix] = max(latest.get(prefix, 0), ms)
        for prefix in targets:
            if latest.get(prefix, 0) > self._lift_time(prefix):
                continue
            _, in_sections = self.banlist.remove(prefix)
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

    def rescan(self, bls: BlacklistService, connection: Any, *, reset: bool = False) -> SyncReport:
        """Rebuild the list from the whole ledger and every lift.

        This drops rows deleted from the ledger and applies a changed allowlist,
        duration or prefix lengths. The ledger is streamed and the old list let
        go before the new one is built, so memory holds one list; if the rebuild
        fails half-way, the next pass reads the list back from the ConfigMaps.
        The bans the head carried stay in the head, so a list that did not change
        is not written again; one that did is compacted.
        """
        spec = bls.spec
        if self._broken:
            self.load(bls)
        if reset:
            self.cursor = self.seen = self.table_oid = 0
        newest, exact = ledger.newest_hit_id(connection)
        if newest < self.cursor:
            self.cursor = self.seen = 0
        self.lifts, self.wide_lifts, self.lift_cursor, self.lifts_loaded = {}, [], 0, True
        self._read_lifts(connection, spec.ban_prefix_lengths)
        key = self._filter(bls)
        before = self.banlist.digest()
        head = dict(self.banlist.head)
        self._broken = True
        self.banlist = PackedBanList(spec.ban_duration is not None)
        ranges = key_ranges(spec.allowlist)
        now = int(time.time())
        builder = Builder(spec.ban_duration is not None)
        for address, ms in ledger.stream_latest_hits(connection):
            if allowed(address, ranges):
                continue
            prefix = ban_prefix(address, spec.ban_prefix_lengths)
            stamp = stamp_of(ms, spec.ban_duration)
            if ms <= self._lift_time(prefix) or (spec.ban_duration is not None and stamp <= now):
                continue
            builder.add(prefix, stamp)
        self.banlist = builder.finish()
        self.banlist.hold_in_head(head)
        self._broken = False
        self._evict()
        if before != self.banlist.digest() or self._generation == 0:
            self._snapshot_changed = True
        if key != self.filter_key:
            self._head_changed = True  # The head's digest of the filter, at least.
        self.filter_key = key
        if exact:
            # Rows up to ``newest`` were all committed before the stream began.
            self.cursor = self.seen = max(self.cursor, newest)
        self._checked_expiry = time.monotonic()
        self._lifted = False
        # Rows committed during the rescan are read by the incremental path.
        return self.sync(bls, connection, bulk=False)

    def _evict(self, limit: int | None = None) -> None:
        """Drop the oldest bans beyond ``limit`` (the capacity), merging the head first."""
        limit = self.capacity if limit is None else limit
        if len(self.banlist) <= limit:
            if len(self.banlist) < self.capacity:
                self.evicted = 0
            return
        evicted = self.banlist.evict(limit)
        self.evicted += evicted
        self._evicted_now += evicted
        self._snapshot_changed = True

    # Writing ----------------------------------------------------------------------

    def write(self, bls: BlacklistService, *, force: bool = False) -> float | None:
        """Write what changed, as the layout policy says; seconds until a held-back write.

        A compaction writes every part, then the head, then deletes the parts no
        longer needed. Otherwise the head alone is written, at the pace
        :func:`.layout.head_write_delay` sets.
        """
        self._snapshot_changed = self._snapshot_changed or force
        now = time.monotonic()
        head_bytes = self.banlist.head_bytes
        expired = self._next_expiry is not None and self._next_expiry <= int(time.time())
        pending = Pending(
            head_bytes=head_bytes,
            head_count=len(self.banlist.head),
            head_changed=self._head_changed,
            snapshot_changed=self._snapshot_changed or self._stored_parts is None,
            lifted=self._lifted,
            expired=expired,
            over_capacity=len(self.banlist) > self.capacity,
        )
        reason = compaction_reason(self._written_head, pending, now)
        if reason is not None:
            self._compact(bls)
            self.compactions.append(
                f"{reason}: {len(self.banlist)} entries in {self._stored_parts} parts"
            )
            return None
        held = compaction_delay(self._written_head, pending, now)
        cursor_lag = self.cursor - self._persisted_cursor
        if not (self._head_changed or cursor_lag >= CURSOR_SLACK):
            return held
        delay = head_write_delay(self._written_head, now)
        if delay > 0:
            return delay if held is None else min(delay, held)
        self._write_head(bls, self.banlist.head_text())
        return held

    def _head_state(self) -> HeadState:
        return HeadState(
            count=len(self.banlist),
            capacity=self.capacity,
            generation=self._generation,
            parts=self._stored_parts or 0,
            cursor=self.cursor,
            lift_cursor=self.lift_cursor,
            lifts_seen=self.lifts_seen,
            ledger_table=self.table_oid,
            filter_key=self.filter_key or "",
        )

    def _write_head(self, bls: BlacklistService, lines: str) -> None:
        manifest = build_banlist_head(bls, lines, self._head_state())
        # Remembered before it is sent: its watch event may be handled before apply returns.
        self._written.remember(bls.namespace, manifest["metadata"]["name"], manifest)
        self._api.apply(manifest)
        self._persisted_cursor = self.cursor
        self._head_changed = False
        self._oldest_unwritten_ms = None
        self._remember_head_written(len(lines.encode()), time.monotonic())

    def _remember_head_written(self, size: int, at: float) -> None:
        self._written_head = Written(
            head_bytes=size,
            head_count=len(self.banlist.head),
            snapshot_count=self.banlist.snapshot_count,
            compacted_at=self._written_head.compacted_at,
            head_written_at=at,
            last_head_bytes=size,
        )

    def _compact(self, bls: BlacklistService) -> None:
        """Write the whole list as a new snapshot generation and an empty head."""
        self._evict()
        self.banlist.merge(int(time.time()))
        generation = self._generation + 1
        while True:
            try:
                parts = self._write_parts(bls, generation)
                break
            except SnapshotTooLargeError:
                # Longer prefixes compress less: what fits is fewer than the capacity.
                self._evict(len(self.banlist) - max(1, int(len(self.banlist) * _SHED_SHARE)))
        stored = self._stored_parts or 0
        self._generation, self._stored_parts = generation, parts
        self._write_head(bls, "")
        for index in range(parts + 1, stored + 1):
            name = part_name(bls.name, index)
            self._written.forget(bls.namespace, name)
            self._api.delete("v1", "ConfigMap", bls.namespace, name)
        now = time.monotonic()
        self._written_head = Written(0, 0, self.banlist.snapshot_count, now, now, 0)
        self._snapshot_changed = False
        self._lifted = False
        self._next_expiry = self.banlist.oldest_stamp() if self.banlist.expiring else None

    def _write_parts(self, bls: BlacklistService, generation: int) -> int:
        count = 0
        for count, data in enumerate(encode_parts(self.banlist), start=1):
            manifest = build_banlist_part(bls, count, data, generation, self.lifts_seen)
            self._written.remember(bls.namespace, manifest["metadata"]["name"], manifest)
            self._api.apply(manifest)
        return count

    def rewrite(self, bls: BlacklistService) -> None:
        """Write the whole list again (after someone edited or deleted one of its ConfigMaps)."""
        if self._broken:
            self.load(bls)
        self._compact(bls)
        self.compactions.append(
            f"restored: {len(self.banlist)} entries in {self._stored_parts} parts"
        )

    def ensure_exists(self, bls: BlacklistService) -> None:
        """Create an empty ``N-banlist`` when none exists yet (it is always present)."""
        if self._stored_parts is None:
            self.filter_key = None
            self.write(bls, force=True)
