"""Own bans do not pile up in every worker's memory while the operator is away.

In a cluster a replica carries its own bans in the log from one generation to
the next until the operator's list holds them; each worker mirrors the log in
its dicts. A flood of hits while the operator is down used to grow that log,
and each worker's dicts, without bound. Past ``OWN_CARRIED`` the oldest own
bans are folded into the shared snapshot: every ban is still enforced by every
worker, the log stays bounded, and a gauge counts what was folded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from blacklist_contract.prefixes import IPV4, Prefix
from blacklist_service.bans import store as store_module
from blacklist_service.bans.files import log_path
from blacklist_service.bans.records import RECORD_SIZE
from blacklist_service.bans.store import BanStore

FLOOD = 2_000
LIMIT = 64


def host(index: int) -> Prefix:
    return Prefix(IPV4, (10 << 24) + index, 32)


def log_records(store: BanStore) -> int:
    store.refresh()
    return os.path.getsize(log_path(store.directory, store.generation)) // RECORD_SIZE


def test_a_flood_of_own_bans_keeps_the_log_bounded_and_every_ban(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "FOLD_RECORDS", LIMIT)
    monkeypatch.setattr(store_module, "OWN_CARRIED", LIMIT)
    worker = BanStore(tmp_path, carry_own=True)
    other = BanStore(tmp_path, carry_own=True)  # another worker of the replica
    largest = 0
    for index in range(FLOOD):
        # One hit a second's worth apart, so which are the newest is plain.
        monkeypatch.setattr(time, "time", lambda index=index: 1_000_000.0 + index)
        worker.ban([(host(index), 0)])
        largest = max(largest, log_records(other))
    # The log (and so each worker's dicts) stayed within its bound, not FLOOD records.
    assert largest <= 2 * (LIMIT + LIMIT) + 1
    assert other.own_carried() <= 2 * LIMIT
    # Every ban holds in every worker, and in one started afresh.
    fresh = BanStore(tmp_path, carry_own=True)
    for store in (worker, other, fresh):
        assert all(store.banned(IPV4, host(index).network) for index in range(FLOOD))
        assert len(store) == FLOOD
    # The newest are still carried as own; the oldest were folded, and counted.
    assert fresh.state(host(FLOOD - 1))[1]
    assert not fresh.state(host(0))[1]
    assert fresh.own_folded() == FLOOD - fresh.own_carried()


def test_a_lone_service_keeps_folding_its_bans_as_before(tmp_path: Path) -> None:
    # Outside a cluster no own ban is carried: the limit never applies.
    store = BanStore(tmp_path, carry_own=False)
    store.ban([(host(index), 0) for index in range(10)])
    store.fold()
    assert store.own_carried() == 0
    assert store.own_folded() == 0
    assert len(store) == 10
