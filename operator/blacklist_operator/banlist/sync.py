"""One instance's ban list in memory, mirrored into ConfigMaps (blocking): load, read, write.

An address is banned when the ledger holds a row for it later than its latest
lift (``denied_access_lifts``) and, with ``spec.banDuration`` set, that row is
younger than the duration; the ban's line then carries its expiry. The state
that matters survives restarts in the ConfigMaps themselves: the bans, and in
annotations of ``N-banlist`` the exact ledger cursor, the lift cursor, the
ledger table's identity and a digest of the filter (allowlist and duration) the
list was built with. Shard 0 is written last, so its cursors never run ahead of
the bans in the other shards. Lifts are all kept in memory (they are few): a
hit that reaches the ledger late, after a lift of its address, stays lifted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from blacklist_operator.apply import KubernetesApi
from blacklist_operator.banlist import ledger
from blacklist_operator.banlist.addresses import parse_text
from blacklist_operator.banlist.filters import KeyRange, allowed, expiry_of, filter_key, key_ranges
from blacklist_operator.banlist.shards import ShardedBanList
from blacklist_operator.builders.banlist import (
    ALLOWLIST_ANNOTATION,
    CURSOR_ANNOTATION,
    LEDGER_TABLE_ANNOTATION,
    LIFT_CURSOR_ANNOTATION,
    LIFTS_SEEN_ANNOTATION,
    ShardState,
    build_banlist_shard,
)
from blacklist_operator.builders.naming import MAX_BANLIST_SHARDS, banlist_shard_name
from blacklist_operator.model import BlacklistService
from blacklist_operator.runtime import WrittenShards

# One cycle reads at most this many rows, so a huge backlog cannot starve the others.
MAX_ROWS_PER_CYCLE = 200_000
# Persist a cursor that advanced over rows that changed nothing only this often.
CURSOR_SLACK = 10_000
# Expired bans leave the ConfigMaps at most this late (every replica already
# stops enforcing them at their expiry, which their line carries).
EXPIRY_CHECK_SECONDS = 5.0
# After the ledger's lock was not free, read without it for this long before asking again.
LOCK_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class SyncReport:
    """What one cycle found."""

    count: int
    overflow: int
    cursor: int
    table_exists: bool
    # Rows past the exact cursor were read without the ledger's lock: read again soon.
    behind: bool = False
    # Ledger ids past the exact cursor (the table's highest id when last read, minus it).
    rows_behind: int = 0
    # ``time`` (Unix ms) of the oldest row this cycle read for the first time, if any.
    oldest_new_row_ms: int | None = None


class BanListSync:
    """The ban list of one BlacklistService, kept in memory and mirrored into ConfigMaps."""

    def __init__(self, api: KubernetesApi, written: WrittenShards) -> None:
        self._api = api
        self._written = written
        self.banlist = ShardedBanList()
        # Every ledger id at or below ``cursor`` has been read; ``seen`` may run ahead
        # of it through reads made without the lock, which are read again later.
        self.cursor = 0
        self.seen = 0
        self.lift_cursor = 0
        self.lifts: dict[int, int] = {}
        self.lifts_seen = 0
        self.lifts_loaded = False
        self.table_oid = 0
        self.filter_key: str | None = None
        self._checked_expiry = 0.0
        self._lock_retry_at = 0.0
        self._persisted_cursor = 0
        self._stored_shards = 0
        # Shards changed in memory but not yet written: a failed write (the API server
        # restarting, say) must not lose them, since the ledger will not return them.
        self._unwritten: set[int] = set()
        self._force_pending = False

    def load(self, bls: BlacklistService) -> None:
        """Continue from the ConfigMaps a previous run wrote, if any."""
        first = self._api.get("v1", "ConfigMap", bls.namespace, banlist_shard_name(bls.name, 0))
        if first is None:
            return
        annotations = (first.get("metadata") or {}).get("annotations") or {}
        data = first.get("data") or {}
        shard_count = min(int(data.get("shards", "1") or 1), MAX_BANLIST_SHARDS)
        texts = [data.get("addresses") or ""]
        for index in range(1, shard_count):
            shard = self._api.get(
                "v1", "ConfigMap", bls.namespace, banlist_shard_name(bls.name, index)
            )
            texts.append(((shard or {}).get("data") or {}).get("addresses", ""))
        self.banlist = ShardedBanList.from_bans(parse_text("".join(texts)))
        self.cursor = self.seen = self._persisted_cursor = int(
            annotations.get(CURSOR_ANNOTATION, "0")
        )
        self.lift_cursor = int(annotations.get(LIFT_CURSOR_ANNOTATION, "0"))
        self.lifts_seen = int(annotations.get(LIFTS_SEEN_ANNOTATION, "0"))
        self.table_oid = int(annotations.get(LEDGER_TABLE_ANNOTATION, "0"))
        self.filter_key = annotations.get(ALLOWLIST_ANNOTATION)
        self._stored_shards = shard_count

    def sync(self, bls: BlacklistService, connection: Any) -> SyncReport:
        """Read the ledger and the lifts past their cursors and write the shards that changed."""
        spec = bls.spec
        if filter_key(spec.allowlist, spec.ban_duration) != self.filter_key:
            return self.rescan(bls, connection)
        if not self.lifts_loaded:
            # After a restart: every lift again (they are few), checked against the ledger.
            self.lifts, self.lift_cursor, self.lifts_loaded = {}, 0, True
        ranges = key_ranges(spec.allowlist)
        changed: set[int] = set()
        rows = 0
        table_exists = True
        newest = self.cursor
        oldest_new: int | None = None
        while rows < MAX_ROWS_PER_CYCLE:
            read = None
            start = self.cursor
            if time.monotonic() >= self._lock_retry_at:
                read = ledger.read_hits(connection, self.cursor, exact=True)
                if read.exact and read.table_exists and self._recreated(read):
                    return self.rescan(bls, connection, reset=True)
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
                oldest_new = oldest if oldest_new is None else min(oldest_new, oldest)
            changed |= self._add_hits(read.rows, ranges, spec.ban_duration)
            self.seen = max(self.seen, read.last_id)
            if read.exact:
                self.cursor, self.table_oid = read.last_id, read.table_oid
            if not read.full:
                break
        changed |= self._apply_lifts(connection)
        changed |= self._expire(spec.ban_duration)
        self.write(bls, changed)
        return SyncReport(
            len(self.banlist),
            self.banlist.overflow,
            self.cursor,
            table_exists,
            behind=self.seen > self.cursor,
            rows_behind=max(0, newest - self.cursor),
            oldest_new_row_ms=oldest_new,
        )

    def _recreated(self, read: ledger.TableRead) -> bool:
        """Whether the ledger is not the one the cursor counts in (table recreated, new volume)."""
        return read.newest_id < self.cursor or (self.table_oid not in (0, read.table_oid))

    def _add_hits(
        self, hits: list[tuple[int, int]], ranges: tuple[KeyRange, ...], duration: int | None
    ) -> set[int]:
        now = time.time()
        bans = [
            (key, expiry_of(ms, duration))
            for key, ms in hits
            if ms > self.lifts.get(key, -1) and not allowed(key, ranges)
        ]
        return self.banlist.add(ban for ban in bans if ban[1] == 0 or ban[1] > now)

    def _apply_lifts(self, connection: Any) -> set[int]:
        """Take in new lifts; lift each address whose latest hit is not later than its lift."""
        lifted: dict[int, int] = {}
        while True:
            read = ledger.read_lifts(connection, self.lift_cursor)
            for key, ms in read.rows:
                lifted[key] = max(lifted.get(key, 0), ms)
            self.lift_cursor = read.last_id
            if not read.full:
                break
        if not lifted:
            return set()
        for key, ms in lifted.items():
            self.lifts[key] = max(self.lifts.get(key, 0), ms)
        self.lifts_seen = max(self.lifts_seen, *lifted.values())
        banned = [key for key in lifted if key in self.banlist]
        if not banned:
            return set()
        latest = ledger.latest_hits(connection, banned)
        return self.banlist.remove(key for key in banned if latest.get(key, 0) <= self.lifts[key])

    def _expire(self, duration: int | None) -> set[int]:
        if duration is None or time.monotonic() - self._checked_expiry < EXPIRY_CHECK_SECONDS:
            return set()
        self._checked_expiry = time.monotonic()
        return self.banlist.remove(self.banlist.expired(int(time.time())))

    def rescan(self, bls: BlacklistService, connection: Any, *, reset: bool = False) -> SyncReport:
        """Rebuild the list from the whole ledger and every lift.

        This drops rows deleted from the ledger and applies a changed allowlist or
        duration. The ledger is streamed, never held whole. Only shards whose text
        changed are written; when nothing changed, nothing is.
        """
        spec = bls.spec
        if reset:
            self.cursor = self.seen = self.table_oid = 0
        newest, exact = ledger.newest_hit_id(connection)
        if newest < self.cursor:
            self.cursor = self.seen = 0
        self.lifts, self.lift_cursor, self.lifts_loaded = {}, 0, True
        self._apply_lifts(connection)
        ranges = key_ranges(spec.allowlist)
        now = time.time()
        bans = (
            (key, expiry)
            for key, ms in ledger.stream_latest_hits(connection)
            if ms > self.lifts.get(key, -1) and not allowed(key, ranges)
            for expiry in (expiry_of(ms, spec.ban_duration),)
            if expiry == 0 or expiry > now
        )
        rebuilt = ShardedBanList.from_bans(bans)
        if rebuilt.shard_count != self.banlist.shard_count:
            changed = set(range(rebuilt.shard_count))
        else:
            changed = {
                index
                for index in range(rebuilt.shard_count)
                if rebuilt.text(index) != self.banlist.text(index)
            }
        key = filter_key(spec.allowlist, spec.ban_duration)
        force = key != self.filter_key
        self.banlist, self.filter_key = rebuilt, key
        if exact:
            # Rows up to ``newest`` were all committed before the stream began.
            self.cursor = self.seen = max(self.cursor, newest)
        self._checked_expiry = time.monotonic()
        self.write(bls, changed, force=force)
        # Rows committed during the rescan are read by the incremental path.
        return self.sync(bls, connection)

    def write(self, bls: BlacklistService, changed: set[int], *, force: bool = False) -> None:
        """Apply the changed shards, then shard 0, then delete shards no longer needed."""
        shard_count = self.banlist.shard_count
        self._unwritten |= changed
        force = force or self._force_pending or shard_count != self._stored_shards
        self._force_pending = force
        changed = {index for index in self._unwritten if index < shard_count}
        cursor_lag = self.cursor - self._persisted_cursor
        if not (force or changed or cursor_lag >= CURSOR_SLACK or self._stored_shards == 0):
            return
        indexes = range(shard_count) if force else sorted(changed | {0})
        state = ShardState(
            shard_count=shard_count,
            count=len(self.banlist),
            cursor=self.cursor,
            lift_cursor=self.lift_cursor,
            lifts_seen=self.lifts_seen,
            ledger_table=self.table_oid,
            filter_key=self.filter_key or "",
        )
        for index in sorted(indexes, key=lambda i: i == 0):
            text = self.banlist.text(index)
            manifest = build_banlist_shard(bls, index, text, state)
            self._api.apply(manifest)
            self._written.remember(bls.namespace, manifest["metadata"]["name"], text)
        for index in range(shard_count, max(self._stored_shards, shard_count)):
            name = banlist_shard_name(bls.name, index)
            self._api.delete("v1", "ConfigMap", bls.namespace, name)
            self._written.forget(bls.namespace, name)
        self._stored_shards = shard_count
        self._persisted_cursor = self.cursor
        self._unwritten.clear()
        self._force_pending = False

    def rewrite(self, bls: BlacklistService) -> None:
        """Write every shard again (after someone edited or deleted one)."""
        self.write(bls, set(), force=True)

    def ensure_exists(self, bls: BlacklistService) -> None:
        """Create an empty ``N-banlist`` when none exists yet (it is always present)."""
        if self._stored_shards == 0:
            self.filter_key = None
            self.write(bls, set(), force=True)
