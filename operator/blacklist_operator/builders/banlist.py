"""The ban-list ConfigMaps: shard 0 ``N-banlist`` and further shards ``N-banlist-1`` ...

Format (docs/CONTRACTS.md): ``addresses`` holds one address per line, sorted;
shard 0 also holds ``shards`` (total shard count) and ``count`` (total
addresses), and the sync's cursor in annotations so that a restarted operator
continues where it stopped.
"""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders.naming import COMPONENT_BANLIST, banlist_shard_name, metadata
from blacklist_operator.model import BlacklistService

CURSOR_ANNOTATION = "blacklist.dev/ledger-cursor"
ALLOWLIST_ANNOTATION = "blacklist.dev/allowlist"


def build_banlist_shard(
    bls: BlacklistService,
    index: int,
    text: str,
    *,
    shard_count: int,
    count: int,
    cursor: int,
    allowlist_key: str,
) -> dict[str, Any]:
    """The ConfigMap of shard ``index``; shard 0 also carries the totals and the cursor."""
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(bls, banlist_shard_name(bls.name, index), COMPONENT_BANLIST),
        "data": {"addresses": text},
    }
    if index == 0:
        manifest["data"]["shards"] = str(shard_count)
        manifest["data"]["count"] = str(count)
        manifest["metadata"]["annotations"] = {
            CURSOR_ANNOTATION: str(cursor),
            ALLOWLIST_ANNOTATION: allowlist_key,
        }
    return manifest
