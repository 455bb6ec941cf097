"""A mail server that accepts connections and never answers must not hold the ledger back.

The ledger row is what spreads a ban to the other replicas (through the
operator), so it must not queue behind alert mails: with an SMTP server that
completes the TCP handshake and then stays silent (each SMTP step waits for its
10 s timeout), hits still reach the ledger within about 2 s. Once a working
mail server is there, every mail arrives exactly once; and SIGTERM still stops
the replica at once while a mail is stuck.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.postgres import PostgresServer
from blacklist_devtools.smtp import SmtpServer
from tests.service.conftest import ledger_addresses
from tests.service.processes import ServiceFactory
from tests.service.silent import SilentServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def hung() -> Iterator[SilentServer]:
    """An SMTP port that accepts connections and never answers (stopped at the end)."""
    with SilentServer() as server:
        yield server


def in_ledger(postgres: PostgresServer, address: str) -> bool:
    return address in ledger_addresses(postgres)


def test_a_hung_smtp_server_does_not_delay_the_ledger(
    empty_ledger: PostgresServer,
    service_factory: ServiceFactory,
    tmp_path: Path,
    hung: SilentServer,
) -> None:
    try:
        service = service_factory(
            DATABASE_URL=empty_ledger.url, MAIL_SERVER=hung.host, MAIL_PORT=str(hung.port)
        )
        assert get(f"{service.url}/blacklisted", source="127.0.0.31").status == 444
        assert wait_until(lambda: "127.0.0.31" in ledger_addresses(empty_ledger), timeout=15)
        time.sleep(1.0)  # the alert about .31 now waits on the silent server
        delays: list[float] = []
        for source in ["127.0.0.32", "127.0.0.33", "127.0.0.34"]:
            started = time.monotonic()
            assert get(f"{service.url}/blacklisted", source=source).status == 444
            arrived = wait_until(partial(in_ledger, empty_ledger, source), timeout=2.0)
            assert arrived, f"{source} not in the ledger after 2 s"
            delays.append(time.monotonic() - started)
        assert max(delays) < 2.0
    finally:
        hung.stop()

    # A working mail server on the same port: every alert arrives, exactly once.
    smtp = SmtpServer(mailbox=tmp_path / "mailbox", port=hung.port)
    smtp.start()
    try:
        assert len(smtp.wait_for(4, timeout=60)) == 4
        time.sleep(1.0)  # anything duplicated would arrive now
        messages = smtp.messages()
        assert len(messages) == 4
        assert len({message["Message-ID"] for message in messages}) == 4
    finally:
        smtp.stop()


def test_sigterm_stops_promptly_while_a_mail_is_stuck_and_the_mail_is_kept(
    empty_ledger: PostgresServer,
    service_factory: ServiceFactory,
    tmp_path: Path,
    hung: SilentServer,
) -> None:
    try:
        service = service_factory(
            DATABASE_URL=empty_ledger.url, MAIL_SERVER=hung.host, MAIL_PORT=str(hung.port)
        )
        assert get(f"{service.url}/blacklisted", source="127.0.0.35").status == 444
        time.sleep(1.5)  # the mail channel is inside an SMTP exchange that never ends
        started = time.monotonic()
        assert service.stop() == 0
        stopped_in = time.monotonic() - started
    finally:
        hung.stop()
    assert stopped_in < 3.0, f"stopping took {stopped_in:.1f} s"

    # The alert was not lost: the next start sends it.
    smtp = SmtpServer(mailbox=tmp_path / "mailbox", port=hung.port)
    smtp.start()
    try:
        service.start()
        assert len(smtp.wait_for(1, timeout=30)) == 1
        time.sleep(1.0)
        assert len(smtp.messages()) == 1
    finally:
        smtp.stop()
