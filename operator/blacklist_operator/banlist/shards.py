"""An in-memory ban list spread over at most 16 shards of bounded size (pure, no I/O).

Each ban is an address and the Unix time its ban ends (``0``: never). IPv4
bans, nearly all of them in practice, are stored packed: one unsigned 64-bit
number (address << 32 | expiry) in a sorted ``array`` per shard, 8 bytes a ban,
so a million bans take 8 MB and a full rebuild never holds two copies of Python
objects. IPv6 bans live in a ``dict`` per shard.

A ban goes to a shard chosen by a hash of its address, so adding one changes
one shard and the others need no rewrite. The shard count is the smallest that
keeps every shard's text under the byte budget; it grows (and everything is
redistributed) only when a shard would overflow. At 16 shards of 1,000,000
bytes the list holds about 1,000,000 IPv4 addresses without expiry (about
600,000 with one, about 350,000 of the longest IPv6 form); addresses beyond
that are counted in ``overflow`` once each and left out rather than breaking
the ConfigMap size limit.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator

from blacklist_operator.banlist.addresses import (
    IPV6_FLAG,
    Ban,
    combine,
    line,
    line_size,
    parse_text,
)
from blacklist_operator.builders.naming import MAX_BANLIST_SHARDS

# A ConfigMap must stay under 1 MiB (1,048,576 bytes) including its metadata
# and managedFields; this leaves room for both.
SHARD_BUDGET_BYTES = 1_000_000
_LOW32 = 0xFFFFFFFF
# Past this many new bans in one shard, merging by sort beats inserting one by one.
_MERGE_THRESHOLD = 32


def _shard_of(key: int, shard_count: int) -> int:
    folded = (key ^ (key >> 64) ^ (key >> 32)) & _LOW32
    return ((folded * 0x9E3779B1) & _LOW32) % shard_count


class ShardedBanList:
    """A set of bans, split into shards whose texts stay under a budget."""

    def __init__(
        self, budget: int = SHARD_BUDGET_BYTES, max_shards: int = MAX_BANLIST_SHARDS
    ) -> None:
        self.budget = budget
        self.max_shards = max_shards
        self._v4: list[array[int]] = [array("Q")]
        self._v6: list[dict[int, int]] = [{}]
        self._sizes: list[int] = [0]
        self._overflowed: set[int] = set()

    @classmethod
    def from_bans(
        cls,
        bans: Iterable[Ban],
        budget: int = SHARD_BUDGET_BYTES,
        max_shards: int = MAX_BANLIST_SHARDS,
    ) -> ShardedBanList:
        """A ban list holding ``bans`` (streamed), with the fewest shards that fit them."""
        banlist = cls(budget, max_shards)
        packed = array("Q")
        wide: dict[int, int] = {}
        total = 0
        for key, expiry in bans:
            if key & IPV6_FLAG:
                wide[key] = combine(wide.get(key, expiry), expiry)
            else:
                packed.append(key << 32 | expiry)
            total += line_size(key, expiry)
        banlist._redistribute(packed, wide, max(1, math.ceil(total / budget)))
        return banlist

    @classmethod
    def from_texts(cls, texts: Iterable[str], budget: int = SHARD_BUDGET_BYTES) -> ShardedBanList:
        """The ban list written in ``texts`` (the ``addresses`` of each shard)."""
        return cls.from_bans(parse_text("".join(texts)), budget)

    @property
    def shard_count(self) -> int:
        """How many shards the list spans now."""
        return len(self._sizes)

    @property
    def overflow(self) -> int:
        """How many distinct addresses were left out for want of room."""
        return len(self._overflowed)

    def __len__(self) -> int:
        return sum(len(v4) for v4 in self._v4) + sum(len(v6) for v6 in self._v6)

    def expiry(self, key: int) -> int | None:
        """When the ban of ``key`` ends (0: never), or None if it is not banned."""
        index = _shard_of(key, self.shard_count)
        if key & IPV6_FLAG:
            return self._v6[index].get(key)
        shard = self._v4[index]
        at = bisect_left(shard, key << 32)
        if at < len(shard) and shard[at] >> 32 == key:
            return shard[at] & _LOW32
        return None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and self.expiry(key) is not None

    def bans(self) -> Iterator[Ban]:
        """Every ban, shard by shard."""
        for index in range(self.shard_count):
            for value in self._v4[index]:
                yield value >> 32, value & _LOW32
            yield from self._v6[index].items()

    def add(self, bans: Iterable[Ban]) -> set[int]:
        """Ban (or extend the ban of) each key; return the indexes of the shards that changed."""
        grouped: list[dict[int, int]] = [{} for _ in range(self.shard_count)]
        for key, expiry in bans:
            group = grouped[_shard_of(key, self.shard_count)]
            group[key] = combine(group.get(key, expiry), expiry)
        changed: set[int] = set()
        for index, group in enumerate(grouped):
            if group and self._add_to_shard(index, group):
                changed.add(index)
            if self.shard_count != len(grouped):
                # The list was redistributed: add the rest again under the new layout.
                rest = [ban for later in grouped[index:] for ban in later.items()]
                return set(range(self.shard_count)) | self.add(rest)
        return changed

    def _add_to_shard(self, index: int, group: dict[int, int]) -> bool:
        """Add ``group`` to shard ``index``; True if its text changed."""
        shard, wide = self._v4[index], self._v6[index]
        fresh: list[int] = []
        grown = 0
        changed = False
        for key, expiry in group.items():
            current = self.expiry(key)
            if current is None:
                if key in self._overflowed:
                    continue
                fresh.append(key)
                grown += line_size(key, expiry)
            elif combine(current, expiry) != current:
                self._set_expiry(index, key, combine(current, expiry))
                changed = True
        if not fresh:
            return changed
        if self._sizes[index] + grown > self.budget:
            if self.shard_count < self.max_shards:
                self._grow()
                return True
            return self._add_what_fits(index, {key: group[key] for key in fresh}) or changed
        packed = [key << 32 | group[key] for key in fresh if not key & IPV6_FLAG]
        if len(packed) > _MERGE_THRESHOLD:
            self._v4[index] = array("Q", sorted([*shard, *packed]))
        else:
            for value in packed:
                insort(shard, value)
        wide.update((key, group[key]) for key in fresh if key & IPV6_FLAG)
        self._sizes[index] += grown
        return True

    def _add_what_fits(self, index: int, group: dict[int, int]) -> bool:
        """At the shard limit: add the bans that fit, count the others as overflow."""
        changed = False
        for key in sorted(group):
            size = line_size(key, group[key])
            if self._sizes[index] + size > self.budget:
                self._overflowed.add(key)
                continue
            if key & IPV6_FLAG:
                self._v6[index][key] = group[key]
            else:
                insort(self._v4[index], key << 32 | group[key])
            self._sizes[index] += size
            changed = True
        return changed

    def _set_expiry(self, index: int, key: int, expiry: int) -> None:
        old = self.expiry(key)
        assert old is not None
        self._sizes[index] += line_size(key, expiry) - line_size(key, old)
        if key & IPV6_FLAG:
            self._v6[index][key] = expiry
            return
        shard = self._v4[index]
        shard[bisect_left(shard, key << 32)] = key << 32 | expiry

    def remove(self, keys: Iterable[int]) -> set[int]:
        """Lift the bans of ``keys``; return the indexes of the shards that changed."""
        changed: set[int] = set()
        for key in keys:
            self._overflowed.discard(key)
            expiry = self.expiry(key)
            if expiry is None:
                continue
            index = _shard_of(key, self.shard_count)
            self._sizes[index] -= line_size(key, expiry)
            if key & IPV6_FLAG:
                del self._v6[index][key]
            else:
                shard = self._v4[index]
                del shard[bisect_left(shard, key << 32)]
            changed.add(index)
        return changed

    def expired(self, now: int) -> list[int]:
        """The keys whose ban ended at or before ``now``."""
        return [key for key, expiry in self.bans() if 0 < expiry <= now]

    def text(self, index: int) -> str:
        """The ``addresses`` text of shard ``index``: sorted, one ban per line."""
        lines = [line(value >> 32, value & _LOW32) for value in self._v4[index]]
        lines += [line(key, expiry) for key, expiry in sorted(self._v6[index].items())]
        return "".join(lines)

    def texts(self) -> list[str]:
        """The texts of every shard, shard 0 first."""
        return [self.text(index) for index in range(self.shard_count)]

    def _grow(self) -> None:
        packed = array("Q")
        for shard in self._v4:
            packed.extend(shard)
        wide = {key: expiry for shard in self._v6 for key, expiry in shard.items()}
        self._redistribute(packed, wide, self.shard_count + 1)

    def _redistribute(self, packed: array[int], wide: dict[int, int], shard_count: int) -> None:
        """Spread the bans over the fewest shards from ``shard_count`` on that fit."""
        count = min(shard_count, self.max_shards)
        while True:
            v4: list[array[int]] = [array("Q") for _ in range(count)]
            v6: list[dict[int, int]] = [{} for _ in range(count)]
            sizes = [0] * count
            for value in packed:
                index = _shard_of(value >> 32, count)
                v4[index].append(value)
                sizes[index] += line_size(value >> 32, value & _LOW32)
            for key, expiry in wide.items():
                index = _shard_of(key, count)
                v6[index][key] = expiry
                sizes[index] += line_size(key, expiry)
            if max(sizes) <= self.budget or count >= self.max_shards:
                break
            count += 1
        for index in range(count):
            unique = _deduplicated(sorted(v4[index]))
            if len(unique) != len(v4[index]):
                sizes[index] = sum(line_size(v >> 32, v & _LOW32) for v in unique) + sum(
                    line_size(k, e) for k, e in v6[index].items()
                )
            v4[index] = array("Q", unique)
        self._v4, self._v6, self._sizes = v4, v6, sizes
        self._overflowed = set()
        for index in range(count):
            if self._sizes[index] > self.budget:
                self._trim(index)

    def _trim(self, index: int) -> None:
        """At the shard limit, keep the sorted prefix that fits and count the rest."""
        kept: dict[int, int] = {}
        size = 0
        for key, expiry in sorted(
            [*((v >> 32, v & _LOW32) for v in self._v4[index]), *self._v6[index].items()]
        ):
            line = line_size(key, expiry)
            if size + line > self.budget:
                self._overflowed.add(key)
                continue
            kept[key] = expiry
            size += line
        self._v4[index] = array("Q", sorted(k << 32 | e for k, e in kept.items() if k < IPV6_FLAG))
        self._v6[index] = {k: e for k, e in kept.items() if k & IPV6_FLAG}
        self._sizes[index] = size


def _deduplicated(values: list[int]) -> list[int]:
    """Sorted packed bans with one entry per address (the expiries combined)."""
    result: list[int] = []
    for value in values:
        if result and result[-1] >> 32 == value >> 32:
            previous = result[-1]
            result[-1] = value & ~_LOW32 | combine(previous & _LOW32, value & _LOW32)
        else:
            result.append(value)
    return result
