"""The durable outbox: ``/blacklisted`` hits waiting for their ledger row and alert mail.

A hit is one row of a SQLite database in ``STATE_DIR``, committed with
``synchronous=FULL`` in WAL mode, so it is on disk (fsync) before the request
answers. The delivery worker reads the rows whose ledger row or mail is still
owed, delivers them, and marks each part done; a row is deleted once both are.
Writers take an ``flock`` on ``outbox.lock`` before writing: SQLite would
serialise them anyway, but a writer that finds the database locked sleeps in
steps of up to 100 ms, while one blocked on the flock wakes the moment it is
released, which keeps ``/blacklisted``'s tail latency low under concurrent hits.
Each thread keeps its own connection (SQLite connections are not shared
between threads).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    event_id         TEXT PRIMARY KEY,
    ip_address       TEXT NOT NULL,
    path             TEXT NOT NULL,
    time             TEXT NOT NULL,
    ledger_delivered INTEGER NOT NULL DEFAULT 0,
    mail_delivered   INTEGER NOT NULL DEFAULT 0
)
"""
MAX_PATH_LENGTH = 2048  # the ledger's path column


@dataclass(frozen=True)
class Hit:
    """One request to ``/blacklisted``: who, where, when, and its idempotency key."""

    event_id: str
    ip_address: str
    path: str
    time: datetime

    @classmethod
    def now(cls, ip_address: str, path: str) -> Hit:
        """A new hit at the current time with a fresh event id."""
        return cls(str(uuid.uuid4()), ip_address, path[:MAX_PATH_LENGTH], datetime.now(UTC))


def _hit(row: tuple[str, str, str, str]) -> Hit:
    return Hit(row[0], row[1], row[2], datetime.fromisoformat(row[3]))


class Outbox:
    """The outbox database of one replica, usable from any thread of any process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock_path = path.with_suffix(".lock")
        with self._writing() as connection:
            connection.execute(SCHEMA)

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, holding the replica-wide write lock."""
        descriptor: int | None = getattr(self._local, "lock", None)
        if descriptor is None:
            # One open file per thread: flock excludes other threads' descriptors too.
            descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._local.lock = descriptor
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield self._connection()
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            # Autocommit mode: each statement is its own transaction; timeout waits for
            # another worker's write lock rather than failing.
            connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL: every commit is fsynced, so a recorded hit survives a power loss.
            connection.execute("PRAGMA synchronous=FULL")
            self._local.connection = connection
        return connection

    def record(self, hit: Hit) -> None:
        """Store ``hit`` durably; return once it is on disk."""
        with self._writing() as connection:
            connection.execute(
                "INSERT INTO outbox (event_id, ip_address, path, time) VALUES (?, ?, ?, ?)",
                (hit.event_id, hit.ip_address, hit.path, hit.time.isoformat()),
            )

    def _pending(self, column: str, limit: int) -> list[Hit]:
        rows = self._connection().execute(
            f"SELECT event_id, ip_address, path, time FROM outbox WHERE {column} = 0 "  # noqa: S608 - column is one of two constants
            "ORDER BY time LIMIT ?",
            (limit,),
        )
        return [_hit(row) for row in rows.fetchall()]

    def pending_ledger(self, limit: int = 500) -> list[Hit]:
        """Hits whose ledger row is not yet delivered, oldest first."""
        return self._pending("ledger_delivered", limit)

    def pending_mail(self, limit: int = 100) -> list[Hit]:
        """Hits whose alert mail is not yet sent, oldest first."""
        return self._pending("mail_delivered", limit)

    def latest_undelivered(self, addresses: list[str]) -> dict[str, datetime]:
        """The latest hit not yet in the ledger of each of ``addresses`` that has one."""
        placeholders = ",".join("?" * len(addresses))
        rows = self._connection().execute(
            "SELECT ip_address, MAX(time) FROM outbox WHERE ledger_delivered = 0 "  # noqa: S608 - placeholders only
            f"AND ip_address IN ({placeholders}) GROUP BY ip_address",
            addresses,
        )
        return {str(address): datetime.fromisoformat(time) for address, time in rows.fetchall()}

    def _mark(self, column: str, event_ids: list[str]) -> None:
        with self._writing() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(
                    f"UPDATE outbox SET {column} = 1 WHERE event_id = ?",  # noqa: S608 - constant
                    [(event_id,) for event_id in event_ids],
                )
                connection.execute(
                    "DELETE FROM outbox WHERE ledger_delivered = 1 AND mail_delivered = 1"
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def mark_ledger_delivered(self, event_ids: list[str]) -> None:
        """Record that these hits are in the ledger."""
        self._mark("ledger_delivered", event_ids)

    def mark_mail_delivered(self, event_ids: list[str]) -> None:
        """Record that these hits' mails were accepted by the SMTP server."""
        self._mark("mail_delivered", event_ids)

    def counts(self) -> tuple[int, int]:
        """How many ledger rows and mails are owed."""
        row = self._connection().execute(
            "SELECT COALESCE(SUM(1 - ledger_delivered), 0), COALESCE(SUM(1 - mail_delivered), 0) "
            "FROM outbox"
        )
        ledger, mail = row.fetchone()
        return int(ledger), int(mail)

    def close(self) -> None:
        """Close this thread's connection and lock file."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
        descriptor: int | None = getattr(self._local, "lock", None)
        if descriptor is not None:
            os.close(descriptor)
            self._local.lock = None
