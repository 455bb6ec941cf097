"""The ConfigMaps of one ban list (blocking): read back at start, the head and a snapshot written.

:class:`BanListStore` knows what the ConfigMaps hold (the snapshot's
generation, its part count, the last head write) and writes them in the order
the contract needs (docs/CONTRACTS.md): every part of a new generation, then
the head that names it, then the deletion of the parts past its count. Each
ConfigMap's digest is remembered before it is sent, since the watch event of a
write may be handled before the apply returns.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from blacklist_contract.lines import parse_lines
from blacklist_contract.wire import (
    PART_DATA_KEY,
    SNAPSHOT_ANNOTATION,
    decode_part,
    head_name,
    part_name,
)
from blacklist_operator.apply import KubernetesApi
from blacklist_operator.banlist.layout import Written, encode_parts
from blacklist_operator.banlist.packed import Columns, PackedBanList
from blacklist_operator.builders.banlist import (
    HEAD_LINES_KEY,
    HeadState,
    build_banlist_head,
    build_banlist_part,
)
from blacklist_operator.model import BlacklistService
from blacklist_operator.runtime import WrittenBanList


class BanListStore:
    """The head ``N-banlist`` and the parts ``N-banlist-<i>`` of one resource."""

    def __init__(self, api: KubernetesApi, written: WrittenBanList) -> None:
        self._api = api
        self._written = written
        self.generation = 0
        # How many parts the head names; None until the head was read or written.
        self.parts: int | None = None
        self.written = Written(0, 0, 0, 0.0, 0.0, 0)
        # Whether the parts read back were all of the head's generation.
        self.complete = True

    def read(self, bls: BlacklistService, banlist: PackedBanList) -> Mapping[str, str] | None:
        """Read the head and its parts into the empty ``banlist``; the head's annotations.

        None when there is no head. A head without a snapshot (the text shards of
        an operator before snapshots) or a part of another generation leaves
        ``complete`` False: the caller rebuilds from the ledger, and the next
        compaction overwrites or deletes what is there.
        """
        head = self._api.get("v1", "ConfigMap", bls.namespace, head_name(bls.name))
        if head is None:
            return None
        annotations: Mapping[str, str] = (head.get("metadata") or {}).get("annotations") or {}
        data = head.get("data") or {}
        if "snapshot" not in data:
            self.parts = max(0, int(data.get("shards", "1") or 1) - 1)
            self.complete = False
            return annotations
        self.generation = int(data.get("snapshot") or 0)
        self.parts = int(data.get("parts") or 0)
        self.complete = all(
            self._read_part(bls, index, banlist) for index in range(1, self.parts + 1)
        )
        lines = data.get(HEAD_LINES_KEY) or ""
        bans, _ = parse_lines(lines)
        for prefix, expiry in bans:
            # Without a duration the hit time is not on the wire: the oldest possible.
            banlist.add(prefix, expiry if banlist.expiring else 0)
        self._head_written(banlist, len(lines.encode()), time.monotonic())
        return annotations

    def _read_part(self, bls: BlacklistService, index: int, banlist: PackedBanList) -> bool:
        """Append part ``index`` to the sections; False if missing or of another generation."""
        part: dict[str, Any] = (
            self._api.get("v1", "ConfigMap", bls.namespace, part_name(bls.name, index)) or {}
        )
        annotations = (part.get("metadata") or {}).get("annotations") or {}
        raw = (part.get("binaryData") or {}).get(PART_DATA_KEY)
        if raw is None or annotations.get(SNAPSHOT_ANNOTATION) != str(self.generation):
            return False
        try:
            sections = decode_part(base64.b64decode(raw))
        except ValueError:
            return False
        for section in sections:
            where = (section.version, section.length)
            columns = banlist.sections.get(where)
            if columns is None:
                columns = banlist.sections[where] = Columns.empty(*where)
            columns.keys.extend(section.keys)
            if columns.low is not None and section.low is not None:
                columns.low.extend(section.low)
            columns.stamps.extend(section.expiries if banlist.expiring else [0] * len(section))
        return True

    def write_head(self, bls: BlacklistService, banlist: PackedBanList, state: HeadState) -> None:
        """Write the head: ``banlist``'s head lines, ``state`` with this snapshot's place."""
        lines = banlist.head_text()
        full = replace(state, generation=self.generation, parts=self.parts or 0)
        manifest = build_banlist_head(bls, lines, full)
        self._written.remember(bls.namespace, manifest["metadata"]["name"], manifest)
        self._api.apply(manifest)
        self._head_written(banlist, len(lines.encode()), time.monotonic())

    def _head_written(self, banlist: PackedBanList, size: int, at: float) -> None:
        self.written = Written(
            head_bytes=size,
            head_count=len(banlist.head),
            snapshot_count=banlist.snapshot_count,
            compacted_at=self.written.compacted_at,
            head_written_at=at,
            last_head_bytes=size,
        )

    def write_snapshot(
        self, bls: BlacklistService, banlist: PackedBanList, state: HeadState
    ) -> None:
        """Write the merged ``banlist`` as a new generation: parts, head, then the deletions.

        Raises :class:`.layout.SnapshotTooLargeError` (before the head is written,
        so readers keep the previous generation) when the parts would not fit.
        """
        generation = self.generation + 1
        count = 0
        for count, data in enumerate(encode_parts(banlist), start=1):
            manifest = build_banlist_part(bls, count, data, generation, state.lifts_seen)
            self._written.remember(bls.namespace, manifest["metadata"]["name"], manifest)
            self._api.apply(manifest)
        stored = self.parts or 0
        self.generation, self.parts = generation, count
        self.write_head(bls, banlist, state)
        for index in range(count + 1, stored + 1):
            name = part_name(bls.name, index)
            self._written.forget(bls.namespace, name)
            self._api.delete("v1", "ConfigMap", bls.namespace, name)
        now = time.monotonic()
        self.written = Written(0, 0, banlist.snapshot_count, now, now, 0)
