"""A ledger held by someone else cannot hold the service's ledger thread (issue 19, item 2).

A tenant holding ``LOCK TABLE denied_access_ledger IN ACCESS EXCLUSIVE MODE``
in their database (bundled or external) must not stall the replica: the
ledger thread gives up within its lock timeout, backs off and tries again; the
mail goes out meanwhile; once the lock is released, the row arrives. Every
PostgreSQL connection of the service carries its bounds (lock and statement
timeouts as session parameters, TCP keepalives and a user timeout against a
blackholed route), checked here on a real connection.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.postgres import PostgresServer
from blacklist_devtools.smtp import SmtpServer
from blacklist_service.delivery import ledger
from tests.service.conftest import ledger_addresses
from tests.service.processes import ServiceFactory

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

HELD = 12.0  # longer than the lock timeout (3 s), shorter than the statement timeout (15 s)


def failed_ledger_rounds(metrics: str) -> float:
    """``blacklist_deliveries_total{channel="ledger",outcome="failed"}`` (0 when absent)."""
    found = re.search(
        r'^blacklist_deliveries_total\{channel="ledger",outcome="failed"\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


def test_a_locked_ledger_is_given_up_and_retried_while_mail_goes_on(
    service_factory: ServiceFactory, empty_ledger: PostgresServer, smtp_server: SmtpServer
) -> None:
    service = service_factory(
        DATABASE_URL=empty_ledger.url,
        MAIL_SERVER=smtp_server.host,
        MAIL_PORT=str(smtp_server.port),
    )
    # Ready: the ledger table exists and its bans are loaded.
    assert wait_until(lambda: get(f"{service.url}/readyz").status == 200, timeout=30)

    tenant = empty_ledger.connect()
    try:
        with tenant.cursor() as cursor:
            cursor.execute("LOCK TABLE denied_access_ledger IN ACCESS EXCLUSIVE MODE")
        locked_at = time.monotonic()
        client = "127.0.9.1"
        assert get(f"{service.url}/blacklisted", source=client).status == 444
        assert get(f"{service.url}/?n=2", source=client).status == 403

        # The mail does not wait for the ledger.
        assert wait_until(lambda: len(smtp_server.messages()) == 1, timeout=10)
        # The ledger thread gives up on the lock within its timeout, not the statement's.
        assert wait_until(
            lambda: failed_ledger_rounds(get(service.metrics_url).body) >= 1, timeout=8
        )
        assert time.monotonic() - locked_at < 10
        assert "canceling statement due to lock timeout" in service.log()
        # ...and tries again while the lock is held.
        assert wait_until(
            lambda: failed_ledger_rounds(get(service.metrics_url).body) >= 2, timeout=8
        )
        time.sleep(max(0.0, HELD - (time.monotonic() - locked_at)))
    finally:
        tenant.rollback()
        tenant.close()

    # Released: the row arrives with the next attempt (back-off at most a few seconds here).
    assert wait_until(lambda: ledger_addresses(empty_ledger) == {client}, timeout=20)
    assert len(smtp_server.messages()) == 1
    assert get(f"{service.url}/?n=2", source="127.0.9.2").body == "4.0"


def test_every_postgresql_connection_carries_its_bounds(empty_ledger: PostgresServer) -> None:
    engine = ledger.make_engine(empty_ledger.url)
    try:
        with engine.connect() as connection:
            settings = {
                name: connection.exec_driver_sql(f"SHOW {name}").scalar_one()
                for name in ("lock_timeout", "statement_timeout", "application_name")
            }
            # Startup parameters survive what a transaction or a savepoint undoes.
            connection.exec_driver_sql("SAVEPOINT probe")
            connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
            connection.exec_driver_sql("ROLLBACK TO SAVEPOINT probe")
            connection.rollback()
            after_rollback = connection.exec_driver_sql("SHOW lock_timeout").scalar_one()
            descriptor = connection.connection.dbapi_connection.fileno()  # type: ignore[union-attr]
            peer = socket.socket(fileno=socket.dup(descriptor))
            try:
                options = {
                    "keepalive": peer.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    "idle": peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    "interval": peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    "count": peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    "user_timeout": peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                }
            finally:
                peer.close()
    finally:
        engine.dispose()
    assert settings == {
        "lock_timeout": "3s",
        "statement_timeout": "15s",
        "application_name": "blacklist-service",
    }
    assert after_rollback == "3s"
    assert options == {
        "keepalive": 1,
        "idle": 10,
        "interval": 5,
        "count": 3,
        "user_timeout": 20_000,
    }
