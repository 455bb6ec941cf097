"""Lifted and expiring bans in a replica: the start-up load and the lift follower.

Run alone, at start the delivery worker loads the ledger's bans: each
address's latest hit bans its covering prefix (``BAN_PREFIX_IPV4``/``_IPV6``)
until that hit plus ``BAN_DURATION`` (expired ones skipped), unless a lift of
that prefix came later. (In a cluster the operator's list carries them.)
Then, about twice a second, it reads the lift table (``denied_access_lifts``)
past its id cursor and records each lift in the replica's ban store: for a row
naming an address, on every held prefix that covers it and on its prefix of
the configured length (held or not, so that an operator line older than the
lift is refused later), for a row naming a CIDR, on that prefix; unless the
prefix was banned again after the lift: the ledger holds a later hit of the
address, or the outbox one not delivered yet, or this replica made the ban
after the lift.

Lifts are ordered by id, never by time: ``time`` is when the lift's
transaction began, not when it committed. The cursor moves only on a read
made under the table's lock (:func:`ledger.read_lifts`), below which no id
can still commit; a read without it applies what it finds and reads from the
same cursor again. A lift is recorded with its id, which the operator's
lifts-seen (the id below which it has applied every lift) is compared with.

Applying a lift twice changes nothing. The cursor is kept in ``STATE_DIR``, so
a restarted process applies only the lifts it has not seen; a fresh state
directory starts at the first lift: the operator's list may still carry a ban
lifted long ago (the operator stalled or down), and only the lift's record
makes the replica refuse that line.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from blacklist_contract.prefixes import (
    IPV4,
    Prefix,
    covering_prefix,
    parse_address,
    parse_prefix,
    prefix_text,
)
from blacklist_contract.tables import LIFTS_TABLE
from blacklist_service.bans.notices import log_added
from blacklist_service.bans.store import BanStore
from blacklist_service.bans.values import lifted_at
from blacklist_service.delivery import ledger
from blacklist_service.delivery.outbox import Outbox
from blacklist_service.durations import ban_until_after
from blacklist_service.metrics import LIFTS_APPLIED

logger = logging.getLogger("blacklist_service.lifts")
POLL_INTERVAL = 0.5  # the contract asks for at least once a second
RETRY_MAXIMUM = 30.0
# Ledger bans go into the store this many at a time, each batch one fold of its
# snapshot: bounded memory (a batch), and few folds however long the ledger.
LOAD_BATCH = 100_000


def lift_target(text: str, lengths: tuple[int, int]) -> Prefix | None:
    """The prefix a lift row lifts at the configured lengths: its CIDR, or its address's prefix."""
    if "/" in text:
        return parse_prefix(text)
    return covering_prefix(text, *lengths)


def load_bans(
    engine: Engine, bans: BanStore, duration: int | None, lengths: tuple[int, int]
) -> int:
    """Ban the prefixes the ledger still bans; return how many were not banned yet.

    Each address's latest hit bans its covering prefix (``lengths``: IPv4,
    IPv6) unless a lift of that prefix (of the address, of another address in
    it, or of the prefix itself) came later. Lift rows are few (an admin's);
    hits are streamed, and go into the store's snapshot :data:`LOAD_BATCH` at
    a time, so memory stays bounded however long the ledger.
    """
    lifted: dict[Prefix, int] = {}
    for text, moment in ledger.latest_lifts(engine):
        target = lift_target(text, lengths)
        if target is not None:
            lifted[target] = max(lifted.get(target, 0), milliseconds(moment))
    since = None if duration is None else datetime.now(UTC) - timedelta(seconds=duration)
    total = 0
    records: list[tuple[Prefix, int]] = []
    for batch in ledger.banned_addresses(engine, since):
        for address, latest in batch:
            prefix = covering_prefix(address, *lengths)
            if prefix is not None and lifted.get(prefix, 0) < milliseconds(latest):
                records.append((prefix, ban_until_after(duration, latest)))
        if len(records) >= LOAD_BATCH:
            total += _load(bans, records)
            records = []
    return total + _load(bans, records)


def _load(bans: BanStore, records: list[tuple[Prefix, int]]) -> int:
    fresh = bans.ban_in_bulk(records)
    log_added(fresh, "the ledger")
    return len(fresh)


def milliseconds(moment: datetime) -> int:
    """Unix milliseconds of ``moment``."""
    return int(moment.timestamp() * 1000)


class LiftFollower:
    """Applies the lift table to the replica's ban store."""

    def __init__(
        self, state_dir: Path, outbox: Outbox, bans: BanStore, lengths: tuple[int, int]
    ) -> None:
        self.lengths = lengths  # the configured ban prefix lengths (IPv4, IPv6)
        self.cursor_path = state_dir / "lifts.cursor"
        self.outbox = outbox
        self.bans = bans
        # Every lift id at or below the cursor has been applied; none can still commit.
        self.cursor = read_cursor(self.cursor_path) or 0
        # Ids above the cursor applied already, from reads made without the lock.
        self._handled: set[int] = set()
        self._next_poll = 0.0
        self._failures = 0
        self._refused = False  # the last read could not take the lock for want of a right
        # Set once every lift committed before the first poll has been applied.
        self.caught_up = threading.Event()

    def poll_if_due(self, engine: Engine) -> bool:
        """Poll when it is time to; True when there may be more lifts to read at once."""
        if time.monotonic() < self._next_poll:
            return False
        try:
            busy = self.poll(engine)
        except SQLAlchemyError as error:
            self._failures += 1
            delay = min(RETRY_MAXIMUM, POLL_INTERVAL * 2**self._failures)
            self._next_poll = time.monotonic() + delay
            logger.warning(
                "Reading the lifts failed (next in %.1f s): %s", delay, str(error).splitlines()[0]
            )
            return False
        self._failures = 0
        self._next_poll = 0.0 if busy else time.monotonic() + POLL_INTERVAL
        return busy

    def poll(self, engine: Engine) -> bool:
        """Apply the lifts not handled yet; True when a full exact batch was read."""
        limit = 10_000
        read = ledger.read_lifts(engine, self.cursor, limit)
        if read.refused and not self._refused:
            logger.warning(
                "The database role may not lock %s IN SHARE MODE (grant it UPDATE on the "
                "table): lifts are read without the lock, all again from lift %d",
                LIFTS_TABLE,
                self.cursor + 1,
            )
        self._refused = read.refused
        fresh = [lift for lift in read.lifts if lift.id not in self._handled]
        if fresh:
            self._apply(engine, fresh)
        full = len(read.lifts) >= limit
        if not full:
            # Every lift committed so far is applied (one still open is no lift yet).
            self.caught_up.set()
        if not read.exact:
            self._handled.update(lift.id for lift in fresh)
            return False
        if read.lifts:
            self.cursor = read.lifts[-1].id
            write_cursor(self.cursor_path, self.cursor)
            self._handled = {lift_id for lift_id in self._handled if lift_id > self.cursor}
        return full

    def _targets(self, text: str) -> list[Prefix]:
        """What a lift row lifts: its CIDR, or its address's prefixes held and configured."""
        if "/" in text:
            prefix = parse_prefix(text)
            return [] if prefix is None else [prefix]
        parsed = parse_address(text)
        if parsed is None:
            return []
        version, number = parsed
        configured = self.lengths[0] if version == IPV4 else self.lengths[1]
        return self.bans.covering(version, number, [configured])

    def _apply(self, engine: Engine, found: list[ledger.Lift]) -> None:
        # The latest lift (by id) of each prefix; those recorded as late already need nothing.
        latest: dict[Prefix, tuple[int, int, str]] = {}
        for lift in found:
            for prefix in self._targets(lift.ip_address):
                if lift.id > latest.get(prefix, (0, 0, ""))[0]:
                    latest[prefix] = (lift.id, milliseconds(lift.time), lift.ip_address)
        wanted = {
            prefix: lift
            for prefix, lift in latest.items()
            if (lifted_at(self.bans.value(prefix)) or 0) < lift[0]
        }
        if not wanted:
            return
        # A hit of the lifted address delivered to the ledger after the lift bans
        # again. One still in the outbox does too: that is checked while holding the
        # store, so a hit recorded after the check writes its ban after the lift.
        # (Ledger deliveries run in this thread, so a hit cannot leave the outbox
        # between the two checks.) A later hit of another address in the prefix made
        # here is spared by the store itself (BanStore.lift), one made on another
        # replica comes back through the operator's list.
        texts = sorted({text for _, _, text in wanted.values() if "/" not in text})
        hits = ledger.latest_hits(engine, texts)
        wanted = {
            prefix: (lift_id, at, text)
            for prefix, (lift_id, at, text) in wanted.items()
            if text not in hits or milliseconds(hits[text]) <= at
        }
        with self.bans.locked():
            pending = self.outbox.latest_undelivered(
                sorted({text for _, _, text in wanted.values() if "/" not in text})
            )
            lifts = [
                (prefix, lift_id, at)
                for prefix, (lift_id, at, text) in wanted.items()
                if text not in pending or milliseconds(pending[text]) <= at
            ]
            written = self.bans.lift(lifts)
        if written:
            LIFTS_APPLIED.inc(len(written))
            for prefix in written[:100]:
                logger.warning("%s removed from ban list (ban lifted).", prefix_text(prefix))
            if len(written) > 100:
                logger.warning("%d bans lifted.", len(written))


def read_cursor(path: Path) -> int | None:
    """The lift cursor kept in the state directory, or None in a fresh one."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def write_cursor(path: Path, cursor: int) -> None:
    """Keep the lift cursor (replaced atomically: a crash leaves the old or the new one)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"{cursor}\n")
    os.replace(temporary, path)
