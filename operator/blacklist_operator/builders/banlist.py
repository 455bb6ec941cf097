"""The ban-list ConfigMaps: the head ``N-banlist`` and the snapshot parts ``N-banlist-<i>``.

Format: :mod:`blacklist_contract.wire` and docs/CONTRACTS.md. The head holds the
bans not yet in the snapshot as text lines (``addresses``), the totals
(``count``, ``capacity``) and where the snapshot is (``snapshot``: its
generation, ``parts``: how many parts); its annotations hold the sync's cursors,
so a restarted operator continues where it stopped. A part holds
``binaryData.bans`` and its generation. Every one carries the time of the
latest lift applied when it was written.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blacklist_contract.wire import (
    LIFTS_SEEN_ANNOTATION,
    MAX_PARTS,
    PART_DATA_KEY,
    SNAPSHOT_ANNOTATION,
    head_name,
    part_name,
)
from blacklist_operator.builders.naming import COMPONENT_BANLIST, metadata
from blacklist_operator.model.resource import BlacklistService

CURSOR_ANNOTATION = "blacklist.dev/ledger-cursor"
LIFT_CURSOR_ANNOTATION = "blacklist.dev/lift-cursor"
LEDGER_TABLE_ANNOTATION = "blacklist.dev/ledger-table"
# The digest of the filter (allowlist, ban duration, prefix lengths) the list was built with.
ALLOWLIST_ANNOTATION = "blacklist.dev/allowlist"
HEAD_LINES_KEY = "addresses"

__all__ = [
    "ALLOWLIST_ANNOTATION",
    "CURSOR_ANNOTATION",
    "LEDGER_TABLE_ANNOTATION",
    "LIFTS_SEEN_ANNOTATION",
    "LIFT_CURSOR_ANNOTATION",
    "SNAPSHOT_ANNOTATION",
    "HeadState",
    "banlist_names",
    "build_banlist_head",
    "build_banlist_part",
    "payload_digest",
]


@dataclass(frozen=True)
class HeadState:
    """What the head records besides its lines."""

    count: int
    capacity: int
    generation: int
    parts: int
    cursor: int
    lift_cursor: int
    lifts_seen: int
    ledger_table: int
    filter_key: str


def banlist_names(instance: str) -> list[str]:
    """Every name a ban-list ConfigMap of ``instance`` may have: the head, then each part."""
    return [head_name(instance), *(part_name(instance, index) for index in range(1, MAX_PARTS))]


def build_banlist_head(resource: BlacklistService, lines: str, state: HeadState) -> dict[str, Any]:
    """The head ConfigMap ``N-banlist``: lines not yet in the snapshot, totals and cursors."""
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(resource, head_name(resource.name), COMPONENT_BANLIST),
        "data": {
            HEAD_LINES_KEY: lines,
            "count": str(state.count),
            "capacity": str(state.capacity),
            "snapshot": str(state.generation),
            "parts": str(state.parts),
        },
    }
    manifest["metadata"]["annotations"] = {
        LIFTS_SEEN_ANNOTATION: str(state.lifts_seen),
        CURSOR_ANNOTATION: str(state.cursor),
        LIFT_CURSOR_ANNOTATION: str(state.lift_cursor),
        LEDGER_TABLE_ANNOTATION: str(state.ledger_table),
        ALLOWLIST_ANNOTATION: state.filter_key,
    }
    return manifest


def build_banlist_part(
    resource: BlacklistService, index: int, data: bytes, generation: int, lifts_seen: int
) -> dict[str, Any]:
    """Snapshot part ``index`` (1-based): ``binaryData.bans`` of generation ``generation``."""
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(resource, part_name(resource.name, index), COMPONENT_BANLIST),
        "binaryData": {PART_DATA_KEY: base64.b64encode(data).decode("ascii")},
    }
    manifest["metadata"]["annotations"] = {
        SNAPSHOT_ANNOTATION: str(generation),
        LIFTS_SEEN_ANNOTATION: str(lifts_seen),
    }
    return manifest


def payload_digest(body: Mapping[str, Any]) -> bytes:
    """A digest of a ban-list ConfigMap's ``data`` and ``binaryData``, as built or as read.

    The watch compares it with what the sync wrote, so an edit by someone else
    (of the lines, the totals or a part's bytes) is restored.
    """
    payload = json.dumps([body.get("data") or {}, body.get("binaryData") or {}], sort_keys=True)
    return hashlib.blake2b(payload.encode(), digest_size=16).digest()
