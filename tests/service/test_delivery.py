"""``/blacklisted`` against real PostgreSQL and SMTP servers: row, mail, ban, outages, load.

Each test runs the production server as a process (``python -m
blacklist_service``) and speaks to it from its own loopback addresses, so a
ban made by one test never touches another.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.postgres import PostgresServer
from blacklist_devtools.smtp import SmtpServer
from tests.service.processes import ServiceFactory, ServiceProcess

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def ledger_rows(postgres: PostgresServer) -> list[tuple[str, str, str]]:
    """``(event_id, path, ip_address)`` of every ledger row, in id order."""
    connection = postgres.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT to_regclass('denied_access_ledger') IS NOT NULL",
            )
            if not cursor.fetchone()[0]:
                return []
            cursor.execute(
                "SELECT event_id, path, ip_address FROM denied_access_ledger ORDER BY id"
            )
            return [(str(a), str(b), str(c)) for a, b, c in cursor.fetchall()]
    finally:
        connection.close()


def start_service(
    service_factory: ServiceFactory, postgres: PostgresServer, smtp: SmtpServer
) -> ServiceProcess:
    return service_factory(
        DATABASE_URL=postgres.url, MAIL_SERVER=smtp.host, MAIL_PORT=str(smtp.port)
    )


def timed_hit(url: str, source: str) -> float:
    """Call ``/blacklisted`` from ``source``; assert 444; return the seconds it took."""
    started = time.monotonic()
    answer = get(f"{url}/blacklisted", source=source)
    elapsed = time.monotonic() - started
    assert answer.status == 444
    return elapsed


def assert_refused_by_every_worker(url: str, source: str) -> None:
    # Fresh connections spread over both workers; each must refuse at once.
    for _ in range(10):
        assert get(f"{url}/?n=2", source=source).status == 403


def test_a_hit_gives_one_row_one_mail_and_a_ban(
    empty_ledger: PostgresServer, smtp_server: SmtpServer, service_factory: ServiceFactory
) -> None:
    service = start_service(service_factory, empty_ledger, smtp_server)
    timed_hit(service.url, "127.0.0.5")
    assert_refused_by_every_worker(service.url, "127.0.0.5")
    assert get(f"{service.url}/healthz", source="127.0.0.5").status == 200
    # Ready once the ledger's bans are loaded (a lone replica; a fraction of a second).
    assert wait_until(
        lambda: get(f"{service.url}/readyz", source="127.0.0.5").status == 200, timeout=10
    )
    assert get(f"{service.url}/metrics", source="127.0.0.5").status == 403
    bystander = get(f"{service.url}/?n=3", source="127.0.0.6")
    assert (bystander.status, bystander.body) == (200, "9.0")

    assert wait_until(lambda: len(ledger_rows(empty_ledger)) == 1, timeout=15)
    messages = smtp_server.wait_for(1, timeout=15)
    time.sleep(1.0)  # anything duplicated would arrive now
    rows = ledger_rows(empty_ledger)
    assert [(path, address) for _, path, address in rows] == [("/blacklisted", "127.0.0.5")]
    assert len(smtp_server.messages()) == 1
    mail = messages[0]
    assert mail["To"] == "test@domain.com"
    assert mail["Message-ID"] == f"<{rows[0][0]}@blacklist-service>"
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert "127.0.0.5" in text
    assert "/blacklisted" in text
    log = service.log()
    # The hit is a security event (INFO), not an error of the service.
    assert any(
        " INFO " in line and "Access to this endpoint is blocked!" in line
        for line in log.splitlines()
    )
    assert "WARNING" in log
    assert "127.0.0.5 added to ban list." in log


def test_smtp_down_then_up(
    empty_ledger: PostgresServer, smtp_server: SmtpServer, service_factory: ServiceFactory
) -> None:
    service = start_service(service_factory, empty_ledger, smtp_server)
    smtp_server.stop()
    assert timed_hit(service.url, "127.0.0.7") < 1.0
    assert_refused_by_every_worker(service.url, "127.0.0.7")
    assert wait_until(lambda: len(ledger_rows(empty_ledger)) == 1, timeout=15)
    time.sleep(2.0)
    assert smtp_server.messages() == []
    smtp_server.start()
    assert len(smtp_server.wait_for(1, timeout=40)) == 1
    time.sleep(1.0)
    assert len(smtp_server.messages()) == 1


def test_database_down_then_up(
    empty_ledger: PostgresServer, smtp_server: SmtpServer, service_factory: ServiceFactory
) -> None:
    service = start_service(service_factory, empty_ledger, smtp_server)
    assert wait_until(lambda: "Ledger table" in service.log(), timeout=15)
    empty_ledger.stop()
    assert timed_hit(service.url, "127.0.0.8") < 1.0
    assert_refused_by_every_worker(service.url, "127.0.0.8")
    # The mail does not wait for the database.
    assert len(smtp_server.wait_for(1, timeout=15)) == 1
    time.sleep(2.0)
    empty_ledger.start()
    assert wait_until(lambda: len(ledger_rows(empty_ledger)) == 1, timeout=40)
    time.sleep(1.0)
    assert [row[2] for row in ledger_rows(empty_ledger)] == ["127.0.0.8"]
    assert len(smtp_server.messages()) == 1


def test_a_hundred_concurrent_hits_from_a_hundred_addresses(
    empty_ledger: PostgresServer, smtp_server: SmtpServer, service_factory: ServiceFactory
) -> None:
    service = start_service(service_factory, empty_ledger, smtp_server)
    sources = [f"127.0.1.{index}" for index in range(1, 101)]
    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(
            pool.map(
                lambda source: get(f"{service.url}/blacklisted", source=source).status, sources
            )
        )
    assert statuses == [444] * 100
    for source in sources:
        assert get(f"{service.url}/?n=2", source=source).status == 403
    assert wait_until(lambda: len(ledger_rows(empty_ledger)) >= 100, timeout=60)
    smtp_server.wait_for(100, timeout=60)
    time.sleep(1.0)
    rows = ledger_rows(empty_ledger)
    assert sorted(address for _, _, address in rows) == sorted(sources)
    assert len({event for event, _, _ in rows}) == 100
    messages = smtp_server.messages()
    assert len(messages) == 100
    assert {message["Message-ID"] for message in messages} == {
        f"<{event}@blacklist-service>" for event, _, _ in rows
    }


def test_pending_work_survives_a_restart_and_bans_come_back(
    empty_ledger: PostgresServer, smtp_server: SmtpServer, service_factory: ServiceFactory
) -> None:
    service = start_service(service_factory, empty_ledger, smtp_server)
    smtp_server.stop()
    timed_hit(service.url, "127.0.0.9")
    assert wait_until(lambda: len(ledger_rows(empty_ledger)) == 1, timeout=15)
    assert service.stop() == 0  # graceful: SIGTERM is a clean exit
    service.start()
    assert_refused_by_every_worker(service.url, "127.0.0.9")
    smtp_server.start()
    assert len(smtp_server.wait_for(1, timeout=40)) == 1
    # A brand-new replica (no local state) learns the ban from the ledger.
    fresh = start_service(service_factory, empty_ledger, smtp_server)
    assert wait_until(
        lambda: get(f"{fresh.url}/?n=2", source="127.0.0.9").status == 403, timeout=15
    )
    assert get(f"{fresh.url}/?n=2", source="127.0.0.10").status == 200
    time.sleep(1.0)
    assert len(smtp_server.messages()) == 1
    assert len(ledger_rows(empty_ledger)) == 1


def test_starts_and_bans_while_the_database_is_down(
    empty_ledger: PostgresServer, smtp_server: SmtpServer, service_factory: ServiceFactory
) -> None:
    empty_ledger.stop()
    service = start_service(service_factory, empty_ledger, smtp_server)
    # It serves and bans, but is not ready before it has loaded the ledger's bans.
    assert get(f"{service.url}/readyz").status == 503
    assert timed_hit(service.url, "127.0.0.11") < 1.0
    assert_refused_by_every_worker(service.url, "127.0.0.11")
    empty_ledger.start()
    assert wait_until(lambda: get(f"{service.url}/readyz").status == 200, timeout=30)
    # The schema is created once the database answers, then the row is delivered.
    assert wait_until(lambda: len(ledger_rows(empty_ledger)) == 1, timeout=40), service.log()
    assert len(smtp_server.wait_for(1, timeout=15)) == 1
