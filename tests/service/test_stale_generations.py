"""A start removes the files of a ban-store generation replaced just before the last run stopped.

A new generation is written, named in ``current``, and only then are the old
snapshot and log unlinked. A replica stopped (killed, OOM) between the last two
steps kept the old files, as large as the list, on its state volume for good;
each such stop added another. The start that follows removes them, and the
store it opens holds every ban.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from blacklist_contract.prefixes import IPV4, Prefix
from blacklist_service.bans.files import log_path, snapshot_path
from blacklist_service.bans.store import BanStore
from blacklist_service.config import Settings, defaults
from blacklist_service.serving.server import prepare


def test_a_start_removes_a_replaced_generation_left_by_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # prepare() points the workers at the state directory through the environment.
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    directory = tmp_path / "bans"
    store = BanStore(directory)
    banned = Prefix(IPV4, 0xC6336401, 32)
    store.ban([(banned, 0)])
    old = store.generation
    kept = snapshot_path(directory, old).read_bytes(), log_path(directory, old).read_bytes()
    store.fold()
    store.close()
    # The stop came after `current` named the new generation, before the old files went.
    snapshot_path(directory, old).write_bytes(kept[0])
    log_path(directory, old).write_bytes(kept[1])

    prepare(Settings.from_config({**defaults(), "STATE_DIR": str(tmp_path), "BACKGROUND": False}))

    assert not snapshot_path(directory, old).exists()
    assert not log_path(directory, old).exists()
    reopened = BanStore(directory)
    assert reopened.generation == old + 1
    assert reopened.banned(IPV4, banned.network)
