"""A replica bans a head's new lines at once, even while it installs a new snapshot generation.

At millions of bans the operator's compaction writes megabytes of parts and
every replica reads them and builds its snapshot: a second or more. A ban that
arrives meanwhile (in the head that names the new generation, or in a head
written after it) must not wait for that: the watcher bans its lines at once
and installs the parts in another thread. Once the parts are in, the list is
the new generation's (what it dropped is gone) plus the latest head, and only
then is the replica synced.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blacklist_contract.lines import format_lines
from blacklist_contract.prefixes import IPV4, Prefix
from blacklist_contract.wire import (
    INSTANCE_LABEL,
    LIFTS_SEEN_ANNOTATION,
    MANAGED_BY_LABEL,
    OPERATOR_NAME,
    SNAPSHOT_ANNOTATION,
    Section,
    encode_part,
)
from blacklist_service.bans import watcher as watcher_module
from blacklist_service.bans.store import BanStore
from blacklist_service.bans.watcher import BanListWatcher
from blacklist_service.config import Settings, defaults

OURS = {MANAGED_BY_LABEL: OPERATOR_NAME, INSTANCE_LABEL: "bls"}
OLD = Prefix(IPV4, 0xC6336401, 32)  # 198.51.100.1: in generation 1 only (its row was deleted)
KEPT = Prefix(IPV4, 0xC6336402, 32)  # 198.51.100.2: in both generations
FIRST = Prefix(IPV4, 0xCB007101, 32)  # 203.0.113.1: in the head that names generation 2
SECOND = Prefix(IPV4, 0xCB007102, 32)  # 203.0.113.2: in a later head of generation 2


class SlowParts:
    """The API server's GET of the parts, whose parts can be held back (being written)."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[str, Any]] = {}
        self.written = threading.Event()
        self.written.set()

    def get(self, name: str) -> dict[str, Any] | None:
        if name.endswith("-banlist"):
            return None  # the head is followed by the watch
        self.written.wait(30)
        return self.parts.get(name)


def head(bans: list[Prefix], snapshot: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "bls-banlist",
            "labels": OURS,
            "annotations": {LIFTS_SEEN_ANNOTATION: "0"},
        },
        "data": {
            "addresses": format_lines([(prefix, 0) for prefix in bans]),
            "snapshot": snapshot,
            "parts": "1",
        },
    }


def part(generation: str, prefixes: list[Prefix]) -> dict[str, Any]:
    section = Section.empty(IPV4, 32)
    for prefix in sorted(prefixes, key=lambda p: p.network):
        section.keys.append(prefix.network)
        section.expiries.append(0)
    return {
        "metadata": {
            "name": "bls-banlist-1",
            "labels": OURS,
            "annotations": {SNAPSHOT_ANNOTATION: generation, LIFTS_SEEN_ANNOTATION: "0"},
        },
        "binaryData": {"bans": base64.b64encode(encode_part([section])).decode()},
    }


@pytest.fixture
def follower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[BanListWatcher, BanStore, list[bool]]]:
    monkeypatch.setattr(watcher_module, "PART_RETRY", 0.01)
    monkeypatch.setattr(watcher_module, "RELIST_SECONDS", 0.05)
    settings = Settings.from_config(
        {
            **defaults(),
            "STATE_DIR": str(tmp_path),
            "BANLIST_CONFIGMAP": "bls-banlist",
            "POD_NAMESPACE": "team",
            "BACKGROUND": False,
        }
    )
    store = BanStore(tmp_path / "bans", carry_own=True)
    stop = threading.Event()
    synced: list[bool] = []
    watcher = BanListWatcher(settings, store, stop, lambda: synced.append(True))
    yield watcher, store, synced
    stop.set()
    watcher.wait_installed(5)
    store.close()


def banned(store: BanStore, prefix: Prefix) -> bool:
    return store.banned(prefix.version, prefix.network)


@pytest.mark.parametrize("parts_late", ["being written", "slow to read"])
def test_new_lines_hold_while_the_next_generation_is_installed(
    follower: tuple[BanListWatcher, BanStore, list[bool]], parts_late: str
) -> None:
    watcher, store, synced = follower
    api = SlowParts()
    api.parts["bls-banlist-1"] = part("1", [OLD, KEPT])
    watcher._apply(api, head([], "1"))
    assert watcher.wait_installed(10)
    assert banned(store, OLD)
    assert banned(store, KEPT)
    assert synced == [True]

    # The operator compacts: generation 2 drops OLD. Its part is not readable yet.
    if parts_late == "being written":
        api.parts["bls-banlist-1"] = part("1", [OLD, KEPT])  # still generation 1
    else:
        api.parts["bls-banlist-1"] = part("2", [KEPT])
        api.written.clear()  # every GET of a part waits
    watcher._apply(api, head([FIRST], "2"))
    assert banned(store, FIRST), "a ban in the new generation's head waited for its parts"
    watcher._apply(api, head([FIRST, SECOND], "2"))
    assert banned(store, SECOND), "a ban in a later head waited for the install"
    assert banned(store, OLD), "the old generation went before the new one was in"
    assert synced == [True], "synced before the new generation was whole"
    assert not watcher.wait_installed(0.2)

    api.parts["bls-banlist-1"] = part("2", [KEPT])
    api.written.set()
    assert watcher.wait_installed(10)
    assert store.operator_generation() == "2"
    assert [banned(store, p) for p in (OLD, KEPT, FIRST, SECOND)] == [False, True, True, True]
    assert synced == [True, True]

    # Back to the usual path: a head of the installed generation applies at once.
    watcher._apply(api, head([SECOND], "2"))
    assert watcher.wait_installed(0)
    assert not banned(store, FIRST)
    assert banned(store, SECOND)


def test_an_installer_that_dies_is_replaced_at_the_next_head(
    follower: tuple[BanListWatcher, BanStore, list[bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error nobody foresaw ends the install, not the replica's following of the list."""
    watcher, store, synced = follower
    api = SlowParts()
    api.parts["bls-banlist-1"] = part("1", [OLD, KEPT])
    real_install = watcher._install
    failures: list[int] = []

    def install_once_broken(reader: Any, head: Any) -> None:
        if not failures:
            failures.append(1)
            raise RuntimeError("unforeseen")
        real_install(reader, head)

    monkeypatch.setattr(watcher, "_install", install_once_broken)
    watcher._apply(api, head([FIRST], "1"))
    assert watcher.wait_installed(10)
    assert failures == [1]
    assert banned(store, FIRST), "the head's lines were not banned while installing"
    assert synced == []
    watcher._apply(api, head([FIRST, SECOND], "1"))
    assert watcher.wait_installed(10)
    assert store.operator_generation() == "1"
    assert [banned(store, p) for p in (OLD, KEPT, FIRST, SECOND)] == [True, True, True, True]
    assert synced == [True]
