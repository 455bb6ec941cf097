"""What a prefix's latest value in the ban store means, and what a new generation keeps (pure).

A value is an expiry (Unix seconds, ``0`` for ever: a ban), a lift
(:func:`lift_value` of the lift's id in ``denied_access_lifts``: ids, read
under the table's lock, are the order in which lifts committed) or
:data:`REMOVED_VALUE` (the operator's list dropped it). In a worker's dicts
a prefix is the key ``network << 8 | length`` of its version's dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from blacklist_contract.lines import FOREVER
from blacklist_contract.prefixes import Prefix
from blacklist_service.bans.records import LIFT, OWN, Record
from blacklist_service.bans.snapshot import SectionId, Update

REMOVED_VALUE = -1  # a prefix's value once the operator's list dropped it


def is_active(value: int | None, now: float) -> bool:
    """Whether a prefix whose latest value is ``value`` is banned at ``now``."""
    return value is not None and (value == FOREVER or value > now)


def lift_value(lift_id: int) -> int:
    """The value of a prefix lifted by lift ``lift_id`` (below :data:`REMOVED_VALUE`)."""
    return REMOVED_VALUE - 1 - lift_id


def lifted_at(value: int | None) -> int | None:
    """The id of the lift a value records, or None if it is no lift."""
    return REMOVED_VALUE - 1 - value if value is not None and value < REMOVED_VALUE else None


def extends(current: int | None, until: int, now: float) -> bool:
    """Whether banning until ``until`` bans longer than the value ``current`` does."""
    if not is_active(current, now):
        return True
    assert current is not None
    return current != FOREVER and (until == FOREVER or until > current)


def key_of(prefix: Prefix) -> int:
    """The dict key of a prefix."""
    return prefix.network << 8 | prefix.length


def prefix_of(version: int, key: int) -> Prefix:
    """The prefix of a dict key."""
    return Prefix(version, key >> 8, key & 0xFF)


def newest_own(own: Mapping[tuple[int, int], int], limit: int) -> dict[tuple[int, int], int]:
    """The ``limit`` own bans written last (ties broken by prefix, so every worker agrees)."""
    ranked = sorted(own.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return dict(ranked[:limit])


def fold_updates(
    logs: Mapping[int, Mapping[int, int]],
    own: Mapping[tuple[int, int], int],
    carry_own: bool,
    now: float,
) -> dict[SectionId, list[Update]]:
    """What folding the logs does to the snapshot, per section, sorted by network.

    A ban still running is put in, anything else (a lift, a removal, an
    expired ban) taken out; with ``carry_own``, own bans are left to the new
    log, as they are.
    """
    updates: dict[SectionId, list[Update]] = {}
    for version, log in logs.items():
        for key in sorted(log, key=lambda k: (k & 0xFF, k >> 8)):
            if carry_own and (version, key) in own:
                continue
            value = log[key]
            keep = value >= 0 and (value == FOREVER or value > now)
            updates.setdefault((version, key & 0xFF), []).append(
                (key >> 8, value if keep else None)
            )
    return updates


def with_bans(
    updates: Mapping[SectionId, list[Update]], bans: Mapping[Prefix, int]
) -> dict[SectionId, list[Update]]:
    """``updates`` with ``bans`` (prefix: expiry) put in too, over any update of the same prefix."""
    merged: dict[SectionId, dict[int, int | None]] = {
        ident: dict(section) for ident, section in updates.items()
    }
    for prefix, expiry in bans.items():
        merged.setdefault((prefix.version, prefix.length), {})[prefix.network] = expiry
    return {ident: sorted(section.items()) for ident, section in merged.items()}


def carried_records(
    logs: Mapping[int, Mapping[int, int]],
    own: Mapping[tuple[int, int], int],
    keep_own: bool,
    lifts_seen: int,
    incoming: Callable[[Prefix], int | None] | None,
    now: float,
) -> list[Record]:
    """The records a new generation's log starts with.

    Lifts with an id above ``lifts_seen`` (they must keep beating older lines of the
    operator), and with ``keep_own`` own bans still running that the incoming
    snapshot (``incoming`` finds its entries) does not hold.
    """
    second = int(now)
    carried: list[Record] = []
    for version, log in logs.items():
        for key, value in log.items():
            prefix = prefix_of(version, key)
            written = own.get((version, key))
            if written is not None:
                running = value == FOREVER or value > now
                if keep_own and running and (incoming is None or incoming(prefix) is None):
                    carried.append(Record(OWN, prefix, value, written))
            elif (lift_id := lifted_at(value)) is not None and lift_id > lifts_seen:
                carried.append(Record(LIFT, prefix, lift_id, second))
    return carried
