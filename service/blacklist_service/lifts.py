"""Lifted and expiring bans in a replica: the start-up load and the lift follower.

Run alone, at start the delivery worker loads the ledger's bans: each
address's latest hit bans its covering prefix (``BAN_PREFIX_IPV4``/``_IPV6``)
until that hit plus ``BAN_DURATION`` (expired ones skipped), unless a lift of
that prefix came later. (In a cluster the operator's list carries them.)
Then, about twice a second, it reads the lift table (``denied_access_lifts``)
after its id cursor, plus the lifts of the last minute again (rows can commit
out of id order), and lifts in the replica's ban store, for a row naming an
address, every held prefix that covers it, and for a row naming a CIDR, that
prefix; unless the prefix was banned again after the lift: the ledger holds a
later hit of the address, or the outbox one not delivered yet, or this
replica made the ban after the lift.
Applying a lift twice changes nothing. The cursor is kept in ``STATE_DIR``, so
a restarted process applies only the lifts it has not seen; a fresh state
directory starts at the newest lift, as its load already left lifted bans out
(the last minute's lifts are still checked again, which only catches a ban-list
line the operator wrote before it saw one of them).
"""

from __future__ import annotations

import logging
import os
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
from blacklist_service import ledger
from blacklist_service.bans.notices import log_added
from blacklist_service.bans.store import BanStore
from blacklist_service.bans.values import lifted_at
from blacklist_service.durations import ban_until_after
from blacklist_service.metrics import LIFTS_APPLIED
from blacklist_service.outbox import Outbox

logger = logging.getLogger("blacklist_service.lifts")
POLL_INTERVAL = 0.5  # the contract asks for at least once a second
REREAD_WINDOW = timedelta(minutes=1)
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
        self.cursor = read_cursor(self.cursor_path)
        # Ids of the lifts in the re-read window already handled, with their times.
        self._handled: dict[int, datetime] = {}
        self._next_poll = 0.0
        self._failures = 0

    def start(self, engine: Engine) -> None:
        """With a fresh state directory, skip the lifts made so far (call before loading bans)."""
        if self.cursor is None:
            self.cursor = ledger.latest_lift_id(engine)
            write_cursor(self.cursor_path, self.cursor)

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
        """Apply the lifts not handled yet; True when a full batch was read."""
        if self.cursor is None:
            self.start(engine)
        assert self.cursor is not None
        since = datetime.now(UTC) - REREAD_WINDOW
        limit = 10_000
        found = ledger.lifts_after(engine, self.cursor, since, limit)
        fresh = [lift for lift in found if lift.id not in self._handled]
        if fresh:
            self._apply(engine, fresh)
            for lift in fresh:
                self._handled[lift.id] = lift.time
            newest = max(lift.id for lift in fresh)
            if newest > self.cursor:
                self.cursor = newest
                write_cursor(self.cursor_path, newest)
        self._handled = {id_: at for id_, at in self._handled.items() if at > since}
        return len(found) >= limit

    def _targets(self, text: str) -> list[Prefix]:
        """What a lift row lifts: its CIDR, or every prefix held that covers its address."""
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
        # The latest lift of each prefix; those recorded as late already need nothing.
        latest: dict[Prefix, tuple[int, str]] = {}
        for lift in found:
            at = milliseconds(lift.time)
            for prefix in self._targets(lift.ip_address):
                if at > latest.get(prefix, (0, ""))[0]:
                    latest[prefix] = (at, lift.ip_address)
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
        texts = sorted({text for _, text in wanted.values() if "/" not in text})
        hits = ledger.latest_hits(engine, texts)
        wanted = {
            prefix: (at, text)
            for prefix, (at, text) in wanted.items()
            if text not in hits or milliseconds(hits[text]) <= at
        }
        with self.bans.locked():
            pending = self.outbox.latest_undelivered(
                sorted({text for _, text in wanted.values() if "/" not in text})
            )
            lifts = [
                (prefix, at)
                for prefix, (at, text) in wanted.items()
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
