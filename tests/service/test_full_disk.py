"""A full disk under the ban store: the hit is still recorded, and the store is not torn.

The ban store's directory (``STATE_DIR/bans``) is a small tmpfs, filled to the
last byte while the replica serves; the outbox and the SQLite ledger live
beside it in ``STATE_DIR``, on another file system, as a pod's outbox would
when only the ban store's writes fail. A hit then cannot be banned here, but
it is recorded and reaches the ledger (so its mail, and in a cluster the ban
through the operator's list, follow). Once space is back, a new hit bans at
once in every worker: nothing half-written is left in the log to shift the
records after it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from blacklist_contract.prefixes import IPV4, Prefix
from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_service.bans.store import BanStore
from tests.service.full_disk import fill, free, small_tmpfs
from tests.service.processes import ServiceFactory

pytestmark = pytest.mark.slow


def ledger_rows(state_dir: Path) -> set[str]:
    path = state_dir / "ledger.sqlite3"
    if not path.exists():
        return set()
    with sqlite3.connect(path) as connection:
        try:
            rows = connection.execute("SELECT ip_address FROM denied_access_ledger").fetchall()
        except sqlite3.OperationalError:
            return set()
    return {str(row[0]) for row in rows}


def statuses(url: str, source: str) -> set[int]:
    # Fresh connections spread over both workers.
    return {get(f"{url}/?n=2", source=source).status for _ in range(8)}


def test_a_ban_store_on_a_full_disk_still_records_the_hit_and_is_not_torn(
    service_factory: ServiceFactory,
) -> None:
    service = service_factory.unstarted()
    with small_tmpfs(service.state_dir / "bans", "1m") as volume:
        # 127 records, and the hit below the 128th: the log then ends on a page
        # boundary, so the next record needs a page of its own, which a full disk
        # refuses (a write within a page already held would still succeed).
        store = BanStore(volume)
        store.ban([(Prefix(IPV4, 0x0A630000 + n, 32), 0) for n in range(127)])
        store.close()
        service.start()
        url = service.url
        assert wait_until(lambda: get(f"{url}/readyz").status == 200, timeout=20)
        assert wait_until(lambda: service.log().count(" serves") == 2, timeout=30)
        assert get(f"{url}/blacklisted", source="127.0.41.9").status == 444
        assert statuses(url, "127.0.41.9") == {403}

        fill(volume)
        first, second = "127.0.41.1", "127.0.41.2"
        assert get(f"{url}/blacklisted", source=first).status == 444
        assert wait_until(lambda: first in ledger_rows(service.state_dir), timeout=20)
        metrics = get(service.metrics_url).body
        assert "blacklist_ban_store_write_failures_total 1.0" in metrics
        assert "Could not write the ban of 127.0.41.1" in service.log()

        free(volume)
        assert get(f"{url}/blacklisted", source=second).status == 444
        assert statuses(url, second) == {403}
        assert statuses(url, "127.0.41.9") == {403}
        assert statuses(url, "127.0.41.3") == {200}
        assert wait_until(lambda: second in ledger_rows(service.state_dir), timeout=20)
        assert service.stop() == 0
