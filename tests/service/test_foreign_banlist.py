"""A replica takes nothing from a ConfigMap of its ban list's names that is not the operator's.

Another team's ConfigMap ``bls-banlist`` (or ``bls-banlist-1``) in the
namespace is left untouched by the operator, which reports it
(``BanListSynced=False``, ``ChildConflict``). The replicas can read it too (the
Role names it): were they to apply it, its lines would ban whatever it lists
and its ``snapshot`` would replace the operator's list with nothing. A head or
part without the operator's labels is therefore never applied, and the replica
does not call itself synced on it.
"""

from __future__ import annotations

import base64
import threading
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
LISTED = Prefix(IPV4, 0xC6336401, 32)  # 198.51.100.1, on the operator's list
INJECTED = Prefix(IPV4, 0xCB007107, 32)  # 203.0.113.7, on the other team's ConfigMap


class Parts:
    """Stands in for the API server's GET of the parts."""

    def __init__(self, parts: dict[str, dict[str, Any]]) -> None:
        self.parts = parts

    def get(self, name: str) -> dict[str, Any] | None:
        return self.parts.get(name)


def head(labels: dict[str, str], bans: list[Prefix], snapshot: str, parts: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "bls-banlist",
            "labels": labels,
            "annotations": {LIFTS_SEEN_ANNOTATION: "0"},
        },
        "data": {
            "addresses": format_lines([(prefix, 0) for prefix in bans]),
            "snapshot": snapshot,
            "parts": str(parts),
            "count": str(len(bans)),
        },
    }


def part(labels: dict[str, str], generation: str, prefix: Prefix) -> dict[str, Any]:
    section = Section.empty(IPV4, 32)
    section.keys.append(prefix.network)
    section.expiries.append(0)
    data = encode_part([section])
    return {
        "metadata": {
            "name": "bls-banlist-1",
            "labels": labels,
            "annotations": {SNAPSHOT_ANNOTATION: generation, LIFTS_SEEN_ANNOTATION: "0"},
        },
        "binaryData": {"bans": base64.b64encode(data).decode()},
    }


@pytest.fixture
def watcher(tmp_path: Path) -> tuple[BanListWatcher, BanStore, list[bool]]:
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
    synced: list[bool] = []
    return (
        BanListWatcher(settings, store, threading.Event(), lambda: synced.append(True)),
        store,
        synced,
    )


def banned(store: BanStore, prefix: Prefix) -> bool:
    return store.banned(prefix.version, prefix.network)


def test_a_head_that_is_not_the_operators_is_not_applied(
    watcher: tuple[BanListWatcher, BanStore, list[bool]],
) -> None:
    follower, store, synced = watcher
    api = Parts({"bls-banlist-1": part(OURS, "1", LISTED)})
    follower._apply(api, head(OURS, [], "1", 1))
    assert follower.wait_installed(10)
    assert banned(store, LISTED)
    assert synced == [True]

    # Another team's ConfigMap takes the name (after the operator's was deleted).
    foreign = head({"team": "web"}, [INJECTED], "0", 0)
    follower._apply(api, foreign)
    assert not banned(store, INJECTED)
    assert banned(store, LISTED), "the operator's list was replaced by another team's"
    assert store.operator_generation() == "1"
    assert synced == [True]
    # Labels of another resource are not ours either.
    other = head({**OURS, INSTANCE_LABEL: "web"}, [INJECTED], "0", 0)
    follower._apply(api, other)
    assert not banned(store, INJECTED)


def test_a_part_that_is_not_the_operators_is_not_installed(
    watcher: tuple[BanListWatcher, BanStore, list[bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watcher_module, "PART_ATTEMPTS", 1)
    follower, store, synced = watcher
    monkeypatch.setattr(watcher_module, "RELIST_SECONDS", 0.05)
    api = Parts({"bls-banlist-1": part({"team": "web"}, "1", INJECTED)})
    follower._apply(api, head(OURS, [], "1", 1))
    # The installer keeps trying (and reading the head again) without taking the part.
    assert not follower.wait_installed(0.5)
    assert not banned(store, INJECTED)
    assert synced == []
    follower.stop.set()
    assert follower.wait_installed(5)
