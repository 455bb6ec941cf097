"""A lone replica restarted with a fresh ``STATE_DIR``: its bans and its ledger status.

Run alone (no cluster), the ledger is where a replica's bans outlive its state
directory (docs/configuration.md, "The service environment"): a replica started on an
empty ``STATE_DIR`` must
refuse every address the ledger holds from the first request it answers as
ready. Nothing left in the state directory by a previous run may claim a
ledger connection the new run has not made.
"""

from __future__ import annotations

import time

import pytest

from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.postgres import PostgresServer
from tests.service.conftest import ledger_addresses
from tests.service.processes import ServiceFactory, ServiceProcess
from tests.service.silent import SilentServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def ban_then_stop(
    ledger: PostgresServer, service_factory: ServiceFactory, address: str
) -> ServiceProcess:
    """A replica on ``ledger`` that bans ``address``, waits for its ledger row, and stops."""
    first = service_factory(DATABASE_URL=ledger.url)
    assert get(f"{first.url}/blacklisted", source=address).status == 444
    assert wait_until(lambda: ledger_addresses(ledger) == {address}, timeout=15)
    assert first.stop() == 0
    return first


def first_ready(service: ServiceProcess, timeout: float) -> bool:
    """Poll ``/readyz`` as a load balancer would; True at its first 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get(f"{service.url}/readyz").status == 200:
            return True
        time.sleep(0.02)
    return False


def test_a_restarted_replica_with_a_fresh_state_dir_refuses_ledger_bans_once_ready(
    empty_ledger: PostgresServer, service_factory: ServiceFactory
) -> None:
    first = ban_then_stop(empty_ledger, service_factory, "127.0.0.21")

    # Same database, new empty state directory, another port: a new replica.
    second = service_factory(DATABASE_URL=empty_ledger.url)
    assert second.port != first.port
    assert second.state_dir != first.state_dir
    assert first_ready(second, timeout=30), second.log()
    # From the first request answered as ready, on every worker.
    for _ in range(10):
        assert get(f"{second.url}/?n=2", source="127.0.0.21").status == 403
    assert get(f"{second.url}/?n=2", source="127.0.0.22").status == 200


def test_a_lone_replica_is_not_ready_until_the_database_answers_at_start(
    empty_ledger: PostgresServer, service_factory: ServiceFactory
) -> None:
    ban_then_stop(empty_ledger, service_factory, "127.0.0.23")
    empty_ledger.stop()

    second = service_factory(DATABASE_URL=empty_ledger.url)
    time.sleep(2.0)
    # It serves and bans, but does not claim readiness without the ledger's bans.
    assert get(f"{second.url}/readyz").status == 503
    assert get(f"{second.url}/?n=3", source="127.0.0.24").body == "9.0"
    empty_ledger.start()
    assert first_ready(second, timeout=30), second.log()
    assert get(f"{second.url}/?n=2", source="127.0.0.23").status == 403


def test_a_stale_ledger_marker_does_not_survive_a_restart(
    service_factory: ServiceFactory,
) -> None:
    # A database that accepts connections and never answers: this run cannot connect.
    with SilentServer() as database:
        url = f"postgresql+psycopg2://nobody:nothing@{database.host}:{database.port}/none"
        service = service_factory(DATABASE_URL=url)
        assert service.stop() == 0
        (service.state_dir / "ledger.connected").touch()  # as a previous, connected run left it
        service.start()
        metrics = get(service.metrics_url).body
        assert "blacklist_ledger_connected 0.0" in metrics
