"""The ban-list ConfigMaps: shard 0 ``N-banlist`` and further shards ``N-banlist-1`` ...

Format (docs/CONTRACTS.md): ``addresses`` holds one ban per line, sorted:
``ADDRESS`` or ``ADDRESS EXPIRY`` (Unix seconds). Shard 0 also holds ``shards``
(total shard count) and ``count`` (total addresses), and the sync's cursors in
annotations so that a restarted operator continues where it stopped; every
shard carries the time of the latest lift applied when it was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blacklist_operator.builders.naming import COMPONENT_BANLIST, banlist_shard_name, metadata
from blacklist_operator.model import BlacklistService

CURSOR_ANNOTATION = "blacklist.dev/ledger-cursor"
LIFT_CURSOR_ANNOTATION = "blacklist.dev/lift-cursor"
LEDGER_TABLE_ANNOTATION = "blacklist.dev/ledger-table"
# The digest of the filter (allowlist and ban duration) the list was built with.
ALLOWLIST_ANNOTATION = "blacklist.dev/allowlist"
# On every shard: the latest lift (Unix ms) applied when the shard was written.
LIFTS_SEEN_ANNOTATION = "blacklist.dev/lifts-seen"


@dataclass(frozen=True)
class ShardState:
    """What every write of the ban list records besides the addresses."""

    shard_count: int
    count: int
    cursor: int
    lift_cursor: int
    lifts_seen: int
    ledger_table: int
    filter_key: str


def build_banlist_shard(
    bls: BlacklistService, index: int, text: str, state: ShardState
) -> dict[str, Any]:
    """The ConfigMap of shard ``index``; shard 0 also carries the totals and the cursors."""
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(bls, banlist_shard_name(bls.name, index), COMPONENT_BANLIST),
        "data": {"addresses": text},
    }
    annotations = {LIFTS_SEEN_ANNOTATION: str(state.lifts_seen)}
    if index == 0:
        manifest["data"]["shards"] = str(state.shard_count)
        manifest["data"]["count"] = str(state.count)
        annotations |= {
            CURSOR_ANNOTATION: str(state.cursor),
            LIFT_CURSOR_ANNOTATION: str(state.lift_cursor),
            LEDGER_TABLE_ANNOTATION: str(state.ledger_table),
            ALLOWLIST_ANNOTATION: state.filter_key,
        }
    manifest["metadata"]["annotations"] = annotations
    return manifest
