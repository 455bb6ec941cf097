"""New bans sent out while a rescan streams the whole ledger (blocking).

A rescan reads every ledger address in one transaction and builds the list
again: at 5,000,000 rows, most of two minutes in which no pass runs. Between
the stream's fetches, :class:`RescanBridge` reads the rows committed since
(inside the stream's transaction: each statement sees what committed before
it), and again while the build's final sort runs, and writes a head of the
generation the replicas hold. The head lists the lines the last head listed
plus the new bans, with that head's ledger cursor and lifts-seen: a restart
reads the rows again from the cursor, and a replica that holds a prefix as
lifted since skips its line (docs/CONTRACTS.md). After the stream, the
incremental pass reads the same rows into the rebuilt list.

The lines stay under ``max_bytes``: a read takes no more rows than fit at the
longest line, and once none fit the rest wait for the rescan's end, as every
row did before. Writes keep the pace of every head write (``write_rate`` bytes
a second), so a rescan of minutes under a flood costs etcd no more than the
flood's own heads do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import psycopg2

from blacklist_contract.lines import MAX_EXPIRY, format_line, format_lines
from blacklist_contract.prefixes import IPV6, Prefix
from blacklist_operator.banlist.sync import ledger
from blacklist_operator.banlist.sync.store import BanListConflictError, BanListStore
from blacklist_operator.builders.banlist import HeadState
from blacklist_operator.kube.api import ApiError
from blacklist_operator.model.resource import BlacklistService

logger = logging.getLogger(__name__)

# The ban (prefix, stamp) a hit (address key, Unix ms) makes, if any.
BanOfHit = Callable[[int, int], tuple[Prefix, int] | None]

# The longest line a ban can take (an IPv6 /128 with an expiry), with its newline.
LINE_MAX_BYTES = len(format_line(Prefix(IPV6, (1 << 128) - 1, 128), MAX_EXPIRY)) + 1


@dataclass
class RescanBridge:
    """The head of the held generation while a rescan runs: its lines, and the new bans."""

    store: BanListStore
    resource: BlacklistService
    # The lines the replicas hold for their generation (the last head's), then the new bans.
    lines: dict[Prefix, int]
    # The new bans alone.
    new: dict[Prefix, int]
    # The last head's state: its cursor, lifts-seen and filter.
    state: HeadState
    # The ban a hit makes; the wire expiry of a stamp.
    ban: BanOfHit
    expiry: Callable[[int], int]
    # The ledger id read up to.
    seen: int
    interval: float
    max_bytes: int
    read_rows: int
    # The pace of head writes, and the last head write (monotonic seconds, bytes).
    write_rate: float
    written_at: float
    written_bytes: int
    size: int = 0
    read_at: float = 0.0
    pending: bool = False
    failed: bool = False

    def __post_init__(self) -> None:
        self.size = sum(self.line_bytes(prefix, stamp) for prefix, stamp in self.lines.items())

    def line_bytes(self, prefix: Prefix, stamp: int) -> int:
        return len(format_line(prefix, self.expiry(stamp))) + 1

    def __call__(self, connection: Any) -> None:
        """Between two fetches or sort steps: read new rows, write them (at most every interval)."""
        now = time.monotonic()
        if self.failed or now < self.read_at + self.interval:
            return
        self.read_at = now
        try:
            room = (self.max_bytes - self.size) // LINE_MAX_BYTES
            if room > 0 and self._read(connection, min(self.read_rows, room)):
                self.pending = True
            if self.pending and now >= self.written_at + self.written_bytes / self.write_rate:
                self._write()
        except (psycopg2.Error, OSError, ApiError, BanListConflictError) as error:
            # The stream goes on (the read's savepoint kept its transaction); the new
            # rows wait for its end, as they did before bridges.
            self.failed = True
            logger.warning("New bans wait for the rescan's end: %s", error)

    def _read(self, connection: Any, rows: int) -> bool:
        """Take in up to ``rows`` rows committed since the last read; whether a line was added."""
        read = ledger.peek_hits(connection, self.seen, rows)
        self.seen = read.last_id
        added = False
        for key, ms in read.rows:
            ban = self.ban(key, ms)
            if ban is None:
                continue
            prefix, stamp = ban
            old = self.lines.get(prefix)
            if old is not None and (stamp <= old or self.expiry(stamp) == self.expiry(old)):
                continue
            if old is not None:
                self.size -= self.line_bytes(prefix, old)
            self.lines[prefix] = self.new[prefix] = stamp
            self.size += self.line_bytes(prefix, stamp)
            added = True
        return added

    def _write(self) -> None:
        text = format_lines(
            [(prefix, self.expiry(stamp)) for prefix, stamp in sorted(self.lines.items())]
        )
        state = replace(self.state, count=self.state.count + len(self.new))
        self.store.write_held_head(self.resource, text, state)
        self.written_at, self.written_bytes = time.monotonic(), len(text)
        self.pending = False
