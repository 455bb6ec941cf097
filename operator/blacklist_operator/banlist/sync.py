"""One instance's ban sync, step by step (blocking): load, read the ledger, write shards.

The state that matters survives restarts in the ConfigMaps themselves: the
addresses, and in annotations of ``N-banlist`` the ledger cursor and a digest of
the allowlist the list was filtered with. Shard 0 is written last, so its
cursor never runs ahead of the addresses in the other shards.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from blacklist_operator.apply import KubernetesApi
from blacklist_operator.banlist import ledger
from blacklist_operator.banlist.shards import MAX_SHARDS, ShardedBanList
from blacklist_operator.builders.banlist import (
    ALLOWLIST_ANNOTATION,
    CURSOR_ANNOTATION,
    build_banlist_shard,
)
from blacklist_operator.builders.naming import banlist_shard_name
from blacklist_operator.model import BlacklistService, IPNetwork

# One cycle reads at most this many rows, so a huge backlog cannot starve the others.
MAX_ROWS_PER_CYCLE = 200_000
# A full rescan reads at most this many distinct addresses (16 full shards hold about 1M).
MAX_RESCAN_ADDRESSES = 2_000_000
# Persist a cursor that advanced over rows that changed nothing only this often.
CURSOR_SLACK = 10_000


@dataclass(frozen=True)
class SyncReport:
    """What one cycle found."""

    count: int
    overflow: int
    cursor: int
    table_exists: bool


def allowlist_key(networks: tuple[IPNetwork, ...]) -> str:
    """A short digest of the allowlist the stored ban list was filtered with."""
    text = ",".join(sorted(str(network) for network in networks))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def allowed(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether ``address`` is in the allowlist (and so never banned)."""
    parsed = ipaddress.ip_address(address)
    return any(parsed in network for network in networks if network.version == parsed.version)


class BanListSync:
    """The ban list of one BlacklistService, kept in memory and mirrored into ConfigMaps."""

    def __init__(self, api: KubernetesApi, written: dict[tuple[str, str], str]) -> None:
        self._api = api
        self._written = written
        self.banlist = ShardedBanList()
        self.cursor = 0
        self.allowlist_key: str | None = None
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
        shard_count = min(int(data.get("shards", "1") or 1), MAX_SHARDS)
        addresses = (data.get("addresses") or "").split()
        for index in range(1, shard_count):
            shard = self._get_shard(bls, index)
            addresses += ((shard or {}).get("data") or {}).get("addresses", "").split()
        self.banlist = ShardedBanList.from_addresses(addresses)
        self.cursor = self._persisted_cursor = int(annotations.get(CURSOR_ANNOTATION, "0"))
        self.allowlist_key = annotations.get(ALLOWLIST_ANNOTATION)
        self._stored_shards = shard_count

    def _get_shard(self, bls: BlacklistService, index: int) -> dict[str, Any] | None:
        name = banlist_shard_name(bls.name, index)
        return self._api.get("v1", "ConfigMap", bls.namespace, name)

    def sync(self, bls: BlacklistService, connection: Any) -> SyncReport:
        """Read the ledger past the cursor and write the shards that changed."""
        key = allowlist_key(bls.spec.allowlist)
        force = False
        if key != self.allowlist_key:
            # The allowlist changed: rebuild from the whole ledger with the new filter.
            self.banlist, self.cursor, self.allowlist_key, force = ShardedBanList(), 0, key, True
        changed: set[int] = set()
        rows = 0
        table_exists = True
        while rows < MAX_ROWS_PER_CYCLE:
            read = ledger.read_since(connection, self.cursor)
            table_exists = read.table_exists
            rows += len(read.addresses)
            banned = [a for a in read.addresses if not allowed(a, bls.spec.allowlist)]
            changed |= self.banlist.add(banned)
            self.cursor = read.cursor
            if not read.full:
                break
        self.write(bls, changed, force=force)
        return SyncReport(len(self.banlist), self.banlist.overflow, self.cursor, table_exists)

    def rescan(self, bls: BlacklistService, connection: Any) -> SyncReport:
        """Rebuild the list from the whole ledger, so rows deleted from it (unbans) leave it.

        Only shards whose text changed are written; when nothing changed, nothing is.
        """
        key = allowlist_key(bls.spec.allowlist)
        read = ledger.read_all(connection, MAX_RESCAN_ADDRESSES)
        if not read.table_exists:
            return self.sync(bls, connection)
        banned = [a for a in read.addresses if not allowed(a, bls.spec.allowlist)]
        rebuilt = ShardedBanList.from_addresses(banned)
        if rebuilt.shard_count != self.banlist.shard_count:
            changed = set(range(rebuilt.shard_count))
        else:
            changed = {
                index
                for index in range(rebuilt.shard_count)
                if rebuilt.text(index) != self.banlist.text(index)
            }
        self.banlist, self.allowlist_key = rebuilt, key
        self.cursor = max(self.cursor, read.cursor)
        self.write(bls, changed)
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
        for index in sorted(indexes, key=lambda i: i == 0):
            text = self.banlist.text(index)
            manifest = build_banlist_shard(
                bls,
                index,
                text,
                shard_count=shard_count,
                count=len(self.banlist),
                cursor=self.cursor,
                allowlist_key=self.allowlist_key or "",
            )
            self._api.apply(manifest)
            self._written[(bls.namespace, manifest["metadata"]["name"])] = text
        for index in range(shard_count, max(self._stored_shards, shard_count)):
            name = banlist_shard_name(bls.name, index)
            self._api.delete("v1", "ConfigMap", bls.namespace, name)
            self._written.pop((bls.namespace, name), None)
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
            self.allowlist_key = allowlist_key(bls.spec.allowlist)
            self.write(bls, set(), force=True)
