"""The ConfigMaps of one ban list (blocking): read back at start, the head and a snapshot written.

:class:`BanListStore` knows what the ConfigMaps hold (the snapshot's
generation, its part count, the last head write) and writes them in the order
the contract needs (docs/CONTRACTS.md): every part of a new generation, then
the head that names it, then the deletion of the parts past its count. Each
ConfigMap's digest is remembered before it is sent, since the watch event of a
write may be handled before the apply returns.

Every read and write goes through the ownership check: a ConfigMap of one of
the list's names that this resource did not create (another team's
``N-banlist`` in the namespace) is neither read nor written nor deleted, and
:class:`BanListConflictError` names it. A name not yet known to be ours is
created, never applied (a forced apply would take over what appeared
meanwhile), and later writes carry the uid of the object we made, so one
replaced by someone else is refused by the API server instead of taken over.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from blacklist_contract.lines import parse_lines
from blacklist_contract.wire import (
    MAX_PARTS,
    PART_DATA_KEY,
    SNAPSHOT_ANNOTATION,
    decode_part,
    head_name,
    part_name,
)
from blacklist_operator.banlist.core.layout import Written, encode_parts
from blacklist_operator.banlist.core.packed import Columns, PackedBanList
from blacklist_operator.builders.banlist import (
    HEAD_LINES_KEY,
    HeadState,
    build_banlist_head,
    build_banlist_part,
)
from blacklist_operator.builders.ownership import created_by
from blacklist_operator.kube.api import ApiError, KubernetesApi
from blacklist_operator.model.resource import BlacklistService
from blacklist_operator.runtime.state import WrittenBanList

# Part names past the current count checked before a compaction writes any part, so a
# list that grows by a part or two finds another team's ConfigMap before it has
# overwritten the parts that the head readers follow still names.
LOOKAHEAD_PARTS = 2


class BanListConflictError(Exception):
    """A ConfigMap of one of the list's names exists that this resource did not create."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"ConfigMap {name} exists and was not created by this BlacklistService: left "
            "untouched, and the ban list is not written until it is gone (delete or rename "
            "it, or rename the BlacklistService)"
        )


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
        # name -> uid of the list's ConfigMaps known to be this resource's own.
        self._uids: dict[str, str] = {}

    def read(self, resource: BlacklistService, banlist: PackedBanList) -> Mapping[str, str] | None:
        """Read the head and its parts into the empty ``banlist``; the head's annotations.

        None when there is no head. Raises :class:`BanListConflictError` when the
        head is not this resource's (nothing of it is read). A head without a
        snapshot (the text shards of an operator before snapshots) or a part of
        another generation (or not ours) leaves ``complete`` False: the caller
        rebuilds from the ledger, and the next compaction overwrites or deletes
        what is there.
        """
        head = self._api.get("v1", "ConfigMap", resource.namespace, head_name(resource.name))
        if head is None:
            return None
        if not self._ours(resource, head):
            raise BanListConflictError(head_name(resource.name))
        annotations: Mapping[str, str] = (head.get("metadata") or {}).get("annotations") or {}
        data = head.get("data") or {}
        if "snapshot" not in data:
            self.parts = max(0, int(data.get("shards", "1") or 1) - 1)
            self.complete = False
            return annotations
        self.generation = int(data.get("snapshot") or 0)
        self.parts = int(data.get("parts") or 0)
        self.complete = all(
            self._read_part(resource, index, banlist) for index in range(1, self.parts + 1)
        )
        lines = data.get(HEAD_LINES_KEY) or ""
        bans, _ = parse_lines(lines)
        for prefix, expiry in bans:
            # Without a duration the hit time is not on the wire: the oldest possible.
            banlist.add(prefix, expiry if banlist.expiring else 0)
        self._head_written(banlist, len(lines.encode()), time.monotonic())
        return annotations

    def _read_part(self, resource: BlacklistService, index: int, banlist: PackedBanList) -> bool:
        """Append part ``index`` to the sections; False if absent, foreign or stale."""
        part: dict[str, Any] = (
            self._api.get("v1", "ConfigMap", resource.namespace, part_name(resource.name, index))
            or {}
        )
        if part and not self._ours(resource, part):
            return False
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

    def write_head(
        self,
        resource: BlacklistService,
        banlist: PackedBanList,
        state: HeadState,
        lines: str | None = None,
    ) -> None:
        """Write the head: ``banlist``'s head lines, ``state`` with this snapshot's place.

        ``lines`` replaces the head's lines (a bridge head during a compaction,
        which names the generation readers hold while the next one is written).
        """
        if lines is None:
            lines = banlist.head_text()
        size = self._put_head(resource, lines, state)
        self._head_written(banlist, size, time.monotonic())

    def write_held_head(self, resource: BlacklistService, lines: str, state: HeadState) -> None:
        """Write a head of the generation readers hold with ``lines`` (the list being rebuilt).

        What was written of the snapshot stays as it was (the pace of the next
        compaction and head write counts from this head).
        """
        size = self._put_head(resource, lines, state)
        self.written = replace(
            self.written,
            head_bytes=size,
            head_count=lines.count("\n"),
            head_written_at=time.monotonic(),
            last_head_bytes=size,
        )

    def _put_head(self, resource: BlacklistService, lines: str, state: HeadState) -> int:
        """Write the head with ``lines`` and ``state`` at this snapshot's place; its bytes."""
        full = replace(state, generation=self.generation, parts=self.parts or 0)
        self._put(resource, build_banlist_head(resource, lines, full))
        return len(lines.encode())

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
        self,
        resource: BlacklistService,
        banlist: PackedBanList,
        state: HeadState,
        between_parts: Callable[[], HeadState] | None = None,
    ) -> None:
        """Write the merged ``banlist`` as a new generation: parts, head, then the deletions.

        ``between_parts`` runs before the first part and after each part is
        written (while the head still names the previous generation; it may
        write a bridge head) and returns the state of the head that names the new one.

        Raises :class:`.layout.SnapshotTooLargeError` (before the head is written,
        so readers keep the previous generation) when the parts would not fit, and
        :class:`BanListConflictError` when a name it needs is someone else's (before
        any part is written when that name is among the current count and the
        ``LOOKAHEAD_PARTS`` after it). Parts past the new count are deleted only if ours.
        """
        stored = self.parts or 0
        self._claim(resource, head_name(resource.name))
        for index in range(1, min(stored + LOOKAHEAD_PARTS, MAX_PARTS - 1) + 1):
            self._claim(resource, part_name(resource.name, index))
        generation = self.generation + 1
        count = 0
        # Before the first part too: what the merge took from the head goes out at once.
        head_state = state if between_parts is None else between_parts()
        for count, data in enumerate(encode_parts(banlist), start=1):
            self._put(
                resource, build_banlist_part(resource, count, data, generation, state.lifts_seen)
            )
            if between_parts is not None:
                head_state = between_parts()
        self.generation, self.parts = generation, count
        self.write_head(resource, banlist, head_state)
        for index in range(count + 1, stored + 1):
            name = part_name(resource.name, index)
            uid = self._uids.pop(name, None)
            if uid is None:
                continue  # Never ours (or already gone): not ours to delete.
            self._written.forget(resource.namespace, name)
            self._api.delete("v1", "ConfigMap", resource.namespace, name, uid=uid)
        # The head may carry bans read while the parts were written.
        self.written = replace(
            self.written, snapshot_count=banlist.snapshot_count, compacted_at=time.monotonic()
        )

    # Ownership --------------------------------------------------------------------

    def _ours(self, resource: BlacklistService, body: Mapping[str, Any]) -> bool:
        """Whether ``body`` is this resource's ConfigMap; remember its uid if so."""
        if not created_by(body, resource):
            return False
        metadata = body.get("metadata") or {}
        self._uids[str(metadata.get("name"))] = str(metadata.get("uid"))
        return True

    def _claim(self, resource: BlacklistService, name: str) -> str | None:
        """The uid of our ConfigMap ``name``, None when there is none; raises if it is foreign."""
        known = self._uids.get(name)
        if known is not None:
            return known
        existing = self._api.get("v1", "ConfigMap", resource.namespace, name)
        if existing is None:
            return None
        if not self._ours(resource, existing):
            raise BanListConflictError(name)
        return self._uids[name]

    def _put(self, resource: BlacklistService, manifest: dict[str, Any]) -> None:
        """Create or update one ConfigMap of the list, only ever ours.

        An absent name is created (409 if someone made it meanwhile: look again).
        An update carries our object's uid: one deleted (409) or replaced (422,
        the uid is immutable) since is looked at again, never taken over.
        """
        name = manifest["metadata"]["name"]
        self._written.remember(resource.namespace, name, manifest)
        for _ in range(3):
            uid = self._claim(resource, name)
            if uid is None:
                created = self._api.create(manifest)
                if created is not None:
                    self._uids[name] = str((created.get("metadata") or {}).get("uid"))
                    return
                continue
            guarded = {**manifest, "metadata": {**manifest["metadata"], "uid": uid}}
            try:
                self._api.apply(guarded)
                return
            except ApiError as error:
                if error.status not in (409, 422):
                    raise
                self._uids.pop(name, None)
                if self._claim(resource, name) == uid:
                    raise  # The same object: the write itself was refused.
        raise ApiError(409, f"ConfigMap {name} was replaced during every write attempt")
