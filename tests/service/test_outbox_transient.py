"""A transient error never throws the outbox away (issue 19, item 4).

A worker that starts while the process is out of file descriptors cannot open
its outbox: SQLite says ``unable to open database file``, an
``OperationalError`` that says nothing about the file. The hits pending in it
must survive: once descriptors are available again, their ledger rows and
alert mails arrive. Only a file that fails its integrity check is set aside,
and even that one is drained into the fresh outbox.

The exhaustion is real: the service runs with a low ``RLIMIT_NOFILE`` (soft
and hard, as granian raises a soft limit to the hard one), the lowest at which
the worker gets as far as its outbox, found by trying limits upwards.
"""

from __future__ import annotations

import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blacklist_devtools.kube import wait_until
from blacklist_devtools.postgres import PostgresServer
from blacklist_devtools.processes import stop_process
from blacklist_devtools.smtp import SmtpServer
from blacklist_service.delivery.outbox import Hit, Outbox
from tests.service.processes import ServiceFactory, ServiceProcess

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# What the worker logs when its outbox cannot be opened: kept (the fix), or set aside.
OUTBOX_FAILED = ("cannot be opened now", "set aside as")
LIMITS = range(14, 48)


def ledger_event_ids(postgres: PostgresServer) -> set[str]:
    """The event ids in the ledger (none while the table does not exist)."""
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('denied_access_ledger') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return set()
        cursor.execute("SELECT event_id FROM denied_access_ledger")
        return {str(row[0]) for row in cursor.fetchall()}


def record_pending_hit(state_dir: Path, address: str) -> Hit:
    """A hit left in the replica's outbox by an earlier run, not delivered yet."""
    state_dir.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(state_dir / "outbox.sqlite3")
    hit = Hit.now(address, "/blacklisted")
    outbox.record(hit)
    outbox.close()
    return hit


def start_with_descriptor_limit(service: ServiceProcess, limit: int) -> subprocess.Popen[bytes]:
    """Start ``service`` with at most ``limit`` open files per process (workers inherit it)."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    with service.log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "blacklist_service"],
            env=service.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lower,  # only setrlimit between fork and exec
        )


def first_outcome(service: ServiceProcess, postgres: PostgresServer, hit: Hit) -> str:
    """Wait for the worker to fail on its outbox, deliver, or give up: which it was."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(text in service.log() for text in OUTBOX_FAILED):
            return "outbox failed"
        if hit.event_id in ledger_event_ids(postgres):
            return "delivered"
        time.sleep(0.2)
    return "other"


def test_a_worker_started_out_of_descriptors_keeps_its_outbox_and_delivers_later(
    service_factory: ServiceFactory, empty_ledger: PostgresServer, smtp_server: SmtpServer
) -> None:
    environment = {
        "DATABASE_URL": empty_ledger.url,
        "MAIL_SERVER": smtp_server.host,
        "MAIL_PORT": str(smtp_server.port),
        "WEB_CONCURRENCY": "1",
    }
    for limit in LIMITS:
        service = service_factory.unstarted(**environment)
        hit = record_pending_hit(service.state_dir, "127.0.11.1")
        process = start_with_descriptor_limit(service, limit)
        try:
            outcome = first_outcome(service, empty_ledger, hit)
        finally:
            stop_process(process, 40)
        if outcome == "outbox failed":
            break
        assert outcome != "delivered", f"limit {limit}: delivered before the outbox ever failed"
    else:
        pytest.fail(f"no descriptor limit in {LIMITS} made the worker fail on its outbox")

    # Descriptors available again (the container restarted with its usual limits).
    service.start()
    assert wait_until(lambda: hit.event_id in ledger_event_ids(empty_ledger), timeout=30), (
        service.log()[-4000:]
    )

    def mailed() -> bool:
        return any(mail["X-Blacklist-Event-Id"] == hit.event_id for mail in smtp_server.messages())

    assert wait_until(mailed, timeout=30)
    # The sound file was kept, not set aside.
    assert not list(service.state_dir.glob("outbox.sqlite3.corrupt-*"))


def test_a_corrupt_outbox_set_aside_is_still_drained(
    service_factory: ServiceFactory, empty_ledger: PostgresServer, smtp_server: SmtpServer
) -> None:
    service = service_factory.unstarted(
        DATABASE_URL=empty_ledger.url,
        MAIL_SERVER=smtp_server.host,
        MAIL_PORT=str(smtp_server.port),
    )
    hit = record_pending_hit(service.state_dir, "127.0.11.2")
    # The primary key's index page made garbage: the integrity check fails, while the
    # table's own pages (a full scan) still read.
    outbox = service.state_dir / "outbox.sqlite3"
    with sqlite3.connect(outbox) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        index_root = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'"
        ).fetchone()[0]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    connection.close()
    data = bytearray(outbox.read_bytes())
    start = (index_root - 1) * page_size
    data[start : start + 16] = b"\xff" * 16
    outbox.write_bytes(bytes(data))

    service.start()
    assert wait_until(lambda: hit.event_id in ledger_event_ids(empty_ledger), timeout=30), (
        service.log()[-4000:]
    )
    assert "set aside as" in service.log()
    assert list(service.state_dir.glob("outbox.sqlite3.corrupt-*.drained"))
