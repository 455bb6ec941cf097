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

The outbox must never stand between a client and its ban. Recording a hit
waits at most ``RECORD_WAIT`` for the locks and raises on any failure (a held
lock, a full disk), so the request can ban and answer regardless.

Each process checks the file once (``PRAGMA quick_check``) before its first
use. Only a file that fails that check, or that SQLite calls corrupt or not a
database, is renamed aside with a timestamp suffix, for a post-mortem, and a
fresh outbox takes its place: otherwise every worker would fail at start and
the replica would crash-loop on a file its ``emptyDir`` keeps. Any other error
(too many open files, a full disk, a lock held: ``sqlite3.OperationalError``)
says nothing about the file, which is kept; the check is tried again at the
next use, so a worker that starts under such a condition serves (and bans) and
delivers once it is over. A file set aside is still drained
(:meth:`Outbox.drain_set_aside`): read-only, its undelivered hits are copied
into the fresh outbox, so their ledger rows and mails still go out; it is then
renamed with a ``.drained`` suffix.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from blacklist_service.delivery.salvage import salvage

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
RECORD_WAIT = 2.0  # seconds a request waits for the outbox's locks
CORRUPT_SUFFIX = ".corrupt-"
DRAINED_SUFFIX = ".drained"
# SQLite's primary result codes that condemn the file itself; any other says nothing of it.
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
logger = logging.getLogger(__name__)


class CorruptOutboxError(sqlite3.DatabaseError):
    """The outbox file failed its integrity check."""


def is_corrupt(error: sqlite3.Error) -> bool:
    """Whether ``error`` condemns the database file (as opposed to a transient condition)."""
    if isinstance(error, CorruptOutboxError):
        return True
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in {SQLITE_CORRUPT, SQLITE_NOTADB}


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

    def __init__(self, path: Path, on_set_aside: Callable[[Path], None] | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._threads_lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._checked = False
        self._lock_path = path.with_suffix(".lock")
        self._on_set_aside = on_set_aside
        # Where this process set a corrupt outbox aside, if it did.
        self.set_aside: Path | None = None
        try:
            self.check()
        except (sqlite3.Error, OSError) as error:
            logger.warning(
                "The outbox %s cannot be opened now (%s): kept, and tried again at its next use",
                self.path,
                error,
            )

    def check(self, wait: float | None = None) -> None:
        """Check the file once per process; set it aside if corrupt; raise transient errors.

        Under the write lock: of several workers starting at once, the first sets a
        corrupt file aside and the others open the fresh one it made. ``wait``
        bounds the wait for the locks, as for :meth:`record`.
        """
        if self._checked:
            return
        if not self._check_lock.acquire(timeout=-1 if wait is None else wait):
            raise TimeoutError(f"the outbox check waited for more than {wait:g} s")
        try:
            self._check_once(wait)
        finally:
            self._check_lock.release()

    def _check_once(self, wait: float | None) -> None:
        if not self._checked:  # another thread may have checked while this one waited
            with self._locked(wait):
                try:
                    self._open_sound()
                except sqlite3.Error as error:
                    self.close_connection()
                    # Once per process: a fresh file found corrupt too means a broken disk,
                    # and setting file after file aside would only fill it.
                    if not is_corrupt(error) or self.set_aside is not None:
                        raise
                    self.set_aside = self._set_aside(error)
                    if self._on_set_aside is not None:
                        self._on_set_aside(self.set_aside)
                    self._open_sound()
            self._checked = True

    def _open_sound(self) -> None:
        connection = self._connection()
        check = connection.execute("PRAGMA quick_check").fetchone()
        if check != ("ok",):
            raise CorruptOutboxError(f"integrity check failed: {check}")
        connection.execute(SCHEMA)

    def _reader(self) -> sqlite3.Connection:
        """This thread's connection, once the file is checked (waiting for it as a request may)."""
        self.check(RECORD_WAIT)
        return self._connection()

    def _set_aside(self, error: sqlite3.Error) -> Path:
        """Rename the unusable database (and its WAL files) aside; return its new name."""
        self.close_connection()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}{CORRUPT_SUFFIX}{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                source.rename(target.with_name(target.name + suffix))
        logger.error(
            "The outbox %s is not a usable database (%s): set aside as %s; a fresh outbox "
            "replaces it. Hits still pending in it are copied into the fresh one.",
            self.path,
            error,
            target,
        )
        return target

    @contextmanager
    def _writing(self, wait: float | None = None) -> Iterator[sqlite3.Connection]:
        """This thread's connection, holding the replica-wide write lock."""
        self.check(wait)
        with self._locked(wait):
            yield self._connection()

    @contextmanager
    def _locked(self, wait: float | None = None) -> Iterator[None]:
        """Hold the replica-wide write lock.

        ``wait`` bounds the time to get the lock (``TimeoutError``); None waits as long
        as it takes, which only the delivery threads may do.
        """
        descriptor: int | None = getattr(self._local, "lock", None)
        if descriptor is None:
            # One open file per thread: flock excludes other threads' descriptors too.
            descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._local.lock = descriptor
        # The threads of this process queue on a thread lock first (woken in turn, at
        # once), so only one of them at a time polls the flock other processes hold.
        deadline = None if wait is None else time.monotonic() + wait
        if not self._threads_lock.acquire(timeout=-1 if wait is None else wait):
            raise TimeoutError(f"the outbox lock was held for more than {wait:g} s")
        try:
            if deadline is None:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            else:
                _lock_within(descriptor, max(0.0, deadline - time.monotonic()))
            try:
                yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            self._threads_lock.release()

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            # Autocommit mode: each statement is its own transaction; timeout waits for
            # another worker's write lock rather than failing.
            connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                # FULL: every commit is fsynced, so a recorded hit survives a power loss.
                connection.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error:
                connection.close()  # not a database (or a locked one): try afresh next time
                raise
            self._local.connection = connection
        return connection

    def record(self, hit: Hit, wait: float = RECORD_WAIT) -> None:
        """Store ``hit`` durably; return once it is on disk.

        Waits at most about ``wait`` seconds for each lock (the outbox's and
        SQLite's); raises ``sqlite3.Error`` or ``OSError`` when it cannot record.
        """
        with self._writing(wait) as connection:
            # This thread's connection serves requests only: it must not wait 30 s.
            connection.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            connection.execute(
                "INSERT INTO outbox (event_id, ip_address, path, time) VALUES (?, ?, ?, ?)",
                (hit.event_id, hit.ip_address, hit.path, hit.time.isoformat()),
            )

    def _pending(self, column: str, limit: int) -> list[Hit]:
        rows = self._reader().execute(
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
        rows = self._reader().execute(
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
        row = self._reader().execute(
            "SELECT COALESCE(SUM(1 - ledger_delivered), 0), COALESCE(SUM(1 - mail_delivered), 0) "
            "FROM outbox"
        )
        ledger, mail = row.fetchone()
        return int(ledger), int(mail)

    def drain_set_aside(self) -> int:
        """Copy the undelivered hits of every file set aside into this outbox; how many were read.

        Each file is read read-only, as far as it can be read (a corrupt one may
        fail part-way: what was read is kept), its hits added unless their event
        is here already, and it is then renamed ``….drained`` so that no later
        start copies them again.
        """
        copied = 0
        for aside in sorted(self.path.parent.glob(f"{self.path.name}{CORRUPT_SUFFIX}*")):
            if aside.name.endswith(("-wal", "-shm", "-journal", DRAINED_SUFFIX)):
                continue
            rows = salvage(aside)
            if rows:
                with self._writing() as connection:
                    connection.execute("BEGIN IMMEDIATE")
                    try:
                        # OR IGNORE: a hit already here, or a row that lost a field, is skipped.
                        connection.executemany(
                            "INSERT OR IGNORE INTO outbox (event_id, ip_address, path, time, "
                            "ledger_delivered, mail_delivered) VALUES (?, ?, ?, ?, ?, ?)",
                            rows,
                        )
                        connection.execute("COMMIT")
                    except BaseException:
                        connection.execute("ROLLBACK")
                        raise
            for suffix in ("", "-wal", "-shm"):
                source = aside.with_name(aside.name + suffix)
                if source.exists():
                    source.rename(aside.with_name(aside.name + DRAINED_SUFFIX + suffix))
            logger.warning(
                "Drained the set-aside outbox %s: %d undelivered hit(s) copied into %s",
                aside,
                len(rows),
                self.path,
            )
            copied += len(rows)
        return copied

    def close_connection(self) -> None:
        """Close this thread's database connection."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def close(self) -> None:
        """Close this thread's connection and lock file."""
        self.close_connection()
        descriptor: int | None = getattr(self._local, "lock", None)
        if descriptor is not None:
            os.close(descriptor)
            self._local.lock = None


def _lock_within(descriptor: int, wait: float) -> None:
    """Take the exclusive ``flock`` on ``descriptor`` within ``wait`` seconds, or raise.

    Polls in steps of at most 1 ms: a blocking ``flock`` cannot be given a timeout.
    """
    deadline = time.monotonic() + wait
    pause = 0.0001
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the outbox lock was held for more than {wait:g} s") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.001)
        else:
            return
