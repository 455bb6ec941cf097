"""An in-memory ban list spread over at most 16 shards of bounded size (pure, no I/O).

An address goes to shard ``crc32(address) % shard_count``, so adding one address
changes one shard and the others need no rewrite. The shard count is the
smallest that keeps every shard's text under the byte budget; it grows (and
everything is redistributed) only when a shard would overflow. At 16 shards of
1,000,000 bytes the list holds about 1,000,000 IPv4 addresses (or about 350,000
of the longest IPv6 form); addresses beyond that are counted in ``overflow``
and left out rather than breaking the ConfigMap size limit.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable

# A ConfigMap must stay under 1 MiB (1,048,576 bytes) including its metadata
# and managedFields; this leaves room for both.
SHARD_BUDGET_BYTES = 1_000_000
MAX_SHARDS = 16


def _shard_of(address: str, shard_count: int) -> int:
    return zlib.crc32(address.encode()) % shard_count


def _line_size(address: str) -> int:
    return len(address) + 1


class ShardedBanList:
    """A set of banned addresses, split into shards whose texts stay under a budget."""

    def __init__(self, budget: int = SHARD_BUDGET_BYTES, max_shards: int = MAX_SHARDS) -> None:
        self.budget = budget
        self.max_shards = max_shards
        self.overflow = 0
        self._shards: list[set[str]] = [set()]
        self._sizes: list[int] = [0]

    @classmethod
    def from_addresses(
        cls,
        addresses: Iterable[str],
        budget: int = SHARD_BUDGET_BYTES,
        max_shards: int = MAX_SHARDS,
    ) -> ShardedBanList:
        """A ban list holding ``addresses``, with the fewest shards that fit them."""
        banlist = cls(budget, max_shards)
        unique = set(addresses)
        total = sum(_line_size(address) for address in unique)
        banlist._redistribute(unique, max(1, math.ceil(total / budget)))
        return banlist

    @property
    def shard_count(self) -> int:
        """How many shards the list spans now."""
        return len(self._shards)

    def __len__(self) -> int:
        return sum(len(shard) for shard in self._shards)

    def __contains__(self, address: object) -> bool:
        return (
            isinstance(address, str)
            and address in self._shards[_shard_of(address, self.shard_count)]
        )

    def add(self, addresses: Iterable[str]) -> set[int]:
        """Add ``addresses``; return the indexes of the shards whose text changed."""
        changed: set[int] = set()
        for address in addresses:
            if address in self:
                continue
            index = _shard_of(address, self.shard_count)
            if self._sizes[index] + _line_size(address) <= self.budget:
                self._shards[index].add(address)
                self._sizes[index] += _line_size(address)
                changed.add(index)
            elif self.shard_count < self.max_shards:
                everything = set().union(*self._shards, {address})
                self._redistribute(everything, self.shard_count + 1)
                changed = set(range(self.shard_count))
            else:
                self.overflow += 1
        return changed

    def text(self, index: int) -> str:
        """The ``addresses`` text of shard ``index``: sorted, one per line."""
        lines = sorted(self._shards[index])
        return "".join(f"{line}\n" for line in lines)

    def texts(self) -> list[str]:
        """The texts of every shard, shard 0 first."""
        return [self.text(index) for index in range(self.shard_count)]

    def _redistribute(self, addresses: set[str], shard_count: int) -> None:
        """Spread ``addresses`` over the fewest shards from ``shard_count`` on that fit."""
        count = min(shard_count, self.max_shards)
        while True:
            shards: list[set[str]] = [set() for _ in range(count)]
            sizes = [0] * count
            for address in addresses:
                index = _shard_of(address, count)
                shards[index].add(address)
                sizes[index] += _line_size(address)
            if max(sizes) <= self.budget or count >= self.max_shards:
                break
            count += 1
        self.overflow = 0
        for index in range(count):
            # At the shard limit, keep the sorted prefix that fits and count the rest.
            if sizes[index] > self.budget:
                kept: set[str] = set()
                size = 0
                for address in sorted(shards[index]):
                    if size + _line_size(address) > self.budget:
                        break
                    kept.add(address)
                    size += _line_size(address)
                self.overflow += len(shards[index]) - len(kept)
                shards[index], sizes[index] = kept, size
        self._shards = shards
        self._sizes = sizes
