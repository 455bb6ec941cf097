"""The lifts of one ban list (blocking reads): kept in memory, and the bans each one lifts.

A lift row is an address or a CIDR (``denied_access_lifts``). An address, or a
range no wider than one ban, lifts the ban covering it; a wider range lifts
every ban inside it. A ban stays when an address it covers was hit after the
lift. Every lift is kept (they are few), so a hit that reaches the ledger late,
after a lift of its ban, stays lifted.

Lifts are ordered by id, the order they committed in as read under the
table's lock, never by time (a lift's time is when its transaction began).
The cursor moves only on such an exact read; a read without the lock applies
what it finds and is made again from the same cursor. The ConfigMaps'
lifts-seen is that cursor: every lift with an id at or below it is applied.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from blacklist_contract.prefixes import FULL_LENGTH, IPV6, Prefix
from blacklist_operator.banlist.core.addresses import IPV6_FLAG
from blacklist_operator.banlist.core.filters import ban_prefix, lifted_ban, overlaps
from blacklist_operator.banlist.core.packed import PackedBanList
from blacklist_operator.banlist.sync import ledger


def address_key_of(prefix: Prefix) -> int:
    """The ledger's address key (:mod:`..core.addresses`) of a full-length prefix."""
    return IPV6_FLAG | prefix.network if prefix.version == IPV6 else prefix.network


class Lifts:
    """Every lift read so far, by the ban it lifts (or, for a wide range, as a range)."""

    def __init__(self, cursor: int = 0) -> None:
        # Every lift id at or below ``cursor`` was read, and none can still commit;
        # those at or below ``applied`` were applied to the list before (by this
        # run or, as the head says, the last).
        self.cursor = cursor
        self.applied = cursor
        # The ConfigMaps' lifts-seen: every lift id at or below it is applied. It
        # never goes back, not even while a rescan reads the lifts again. (Not read
        # back from the head: operators before lift ids wrote a time there.)
        self.seen = cursor
        self.loaded = False
        self._by_ban: dict[Prefix, int] = {}
        self._wide: list[tuple[Prefix, int]] = []
        # Ids above ``cursor`` taken in by a read made without the lock.
        self._taken: set[int] = set()

    def restart(self) -> None:
        """Read every lift again from the first (after a restart, or for a rescan)."""
        self._by_ban, self._wide, self.cursor, self.loaded = {}, [], 0, True
        self._taken = set()

    def time_of(self, prefix: Prefix) -> int:
        """The latest lift that reaches the ban of ``prefix`` (-1: none)."""
        latest = self._by_ban.get(prefix, -1)
        for lift, ms in self._wide:
            if ms > latest and overlaps(prefix, lift):
                latest = ms
        return latest

    def read(self, connection: Any, lengths: tuple[int, int]) -> list[tuple[Prefix, int]]:
        """Take in the lifts past the cursor; return those not applied before, (lift, ms)."""
        fresh: list[tuple[Prefix, int]] = []
        while True:
            read = ledger.read_lifts(connection, self.cursor)
            for row_id, lift, ms in read.rows:
                if row_id in self._taken:
                    continue
                ban = lifted_ban(lift, lengths)
                if ban is None:
                    self._wide.append((lift, ms))
                else:
                    self._by_ban[ban] = max(self._by_ban.get(ban, 0), ms)
                if row_id > self.applied:
                    fresh.append((lift, ms))
                self._taken.add(row_id)
            if not read.exact:
                break
            self.cursor = read.last_id
            self._taken = {row_id for row_id in self._taken if row_id > self.cursor}
            self.seen = max(self.seen, self.cursor)
            if not read.full:
                break
        self.applied = max(self.applied, self.cursor)
        return fresh

    def lifted(
        self,
        connection: Any,
        banlist: PackedBanList,
        fresh: list[tuple[Prefix, int]],
        lengths: tuple[int, int],
    ) -> list[Prefix]:
        """The bans of ``banlist`` the ``fresh`` lifts lift: none hit since by what they cover."""
        targets: set[Prefix] = set()
        for lift, _ in fresh:
            ban = lifted_ban(lift, lengths)
            if ban is None:
                targets.update(banlist.within(lift))
            elif ban in banlist:
                targets.add(ban)
        if not targets:
            return []
        rows: Iterable[tuple[int, int]]
        if all(prefix.length == FULL_LENGTH[prefix.version] for prefix in targets):
            # Bans of single addresses: their latest hits by the ledger's address index.
            rows = ledger.latest_hits(connection, [address_key_of(p) for p in targets]).items()
        else:
            rows = ledger.hits_since(connection, min(ms for _, ms in fresh))
        latest: dict[Prefix, int] = {}
        for key, ms in rows:
            prefix = ban_prefix(key, lengths)
            if prefix in targets:
                latest[prefix] = max(latest.get(prefix, 0), ms)
        return sorted(p for p in targets if latest.get(p, 0) <= self.time_of(p))
