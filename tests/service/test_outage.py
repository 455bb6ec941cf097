"""A 30-second outage of PostgreSQL and of the SMTP server during a stream of ``/blacklisted``.

The stream goes on answering ``444`` throughout; once both servers are back,
every hit is in the ledger exactly once and every alert mail arrived exactly
once.
"""

from __future__ import annotations

import threading
import time

import pytest

from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.postgres import PostgresServer
from blacklist_devtools.smtp import SmtpServer
from tests.service.processes import ServiceFactory

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

OUTAGE = 30.0


def ledger_addresses(postgres: PostgresServer) -> list[str]:
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT ip_address FROM denied_access_ledger")
        return sorted(str(row[0]) for row in cursor.fetchall())


def test_every_hit_arrives_once_after_a_database_and_smtp_outage(
    service_factory: ServiceFactory, postgres: PostgresServer, smtp_server: SmtpServer
) -> None:
    service = service_factory(
        DATABASE_URL=postgres.url, MAIL_SERVER=smtp_server.host, MAIL_PORT=str(smtp_server.port)
    )
    accepted: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        index = 0
        while not stop.is_set():
            index += 1
            source = f"127.0.{20 + index // 250}.{index % 250 + 1}"
            answer = get(f"{service.url}/blacklisted", source=source)
            if answer.status == 444:
                accepted.append(source)
            else:
                failures.append(f"{source}: {answer.status}")
            time.sleep(0.1)

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        time.sleep(3)
        postgres.stop()
        smtp_server.stop()
        time.sleep(OUTAGE)
        postgres.start()
        smtp_server.start()
        time.sleep(3)
    finally:
        stop.set()
        streamer.join()

    assert not failures, failures[:5]
    assert len(accepted) > 100
    assert wait_until(lambda: ledger_addresses(postgres) == sorted(accepted), timeout=90)
    messages = smtp_server.wait_for(len(accepted), timeout=90)
    assert len(messages) == len(accepted)
    assert len({message["Message-ID"] for message in messages}) == len(accepted)
