"""Reading the ledger ``denied_access_ledger`` and the lift table ``denied_access_lifts``.

Rows can commit out of ``id`` order (concurrent transactions: a courier that
took ids 1-500 may commit after another committed 501-1000). An incremental
read therefore takes the table's ``SHARE`` lock for the few milliseconds of one
``SELECT``: every ``INSERT`` holds ``ROW EXCLUSIVE`` on the table from before
its ids are drawn until it commits, so while the reader holds ``SHARE`` no
transaction holding an id is in flight, and every id at or below the highest
one read is committed (or rolled back for good). Such a read is *exact* and
its cursor can never skip a row. When the lock cannot be had within
``LOCK_TIMEOUT_MS`` (a session sitting in an open transaction after an
``INSERT``), the read goes ahead without it and says so; the caller keeps its
exact cursor and reads from there again once the lock is free.

Times are Unix milliseconds; addresses are keys of :mod:`..core.addresses`; a lift
row's address is an address or a CIDR, read as a
:class:`~blacklist_contract.prefixes.Prefix`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from blacklist_contract.prefixes import Prefix, parse_prefix
from blacklist_contract.tables import LEDGER_TABLE, LIFTS_TABLE
from blacklist_operator.banlist.core.addresses import IPV6_FLAG, address_key, key_text

BATCH = 50_000
LOCK_TIMEOUT_MS = 250
# Rows fetched per round trip when streaming the whole ledger.
STREAM_ROWS = 20_000
_LATEST = f"SELECT ip_address, (extract(epoch FROM max(time)) * 1000)::bigint FROM {LEDGER_TABLE}"  # noqa: S608 (constant table name)
STREAM_QUERY = f"{_LATEST} GROUP BY ip_address"
LATEST_QUERY = f"{_LATEST} WHERE ip_address = ANY(%s) GROUP BY ip_address"
# The hits since a lift (Unix ms): by the index on ``time`` the service makes.
HITS_SINCE_QUERY = (
    f"SELECT ip_address, (extract(epoch FROM time) * 1000)::bigint FROM {LEDGER_TABLE} "  # noqa: S608 (constant table name)
    "WHERE time > to_timestamp(%s / 1000.0)"
)


@dataclass(frozen=True)
class DatabaseAddress:
    """Where and as whom the operator connects to one instance's PostgreSQL."""

    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)
    # libpq's sslmode; the bundled database is reached inside the cluster without TLS.
    sslmode: str = "prefer"
    # An external database's other TLS keywords (blacklist_contract.database.TLS_PARAMETERS).
    tls: tuple[tuple[str, str], ...] = ()
    # The CA certificate's PEM (spec.database.external.caSecretRef); None: libpq's default.
    ca_certificate: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TableRead:
    """One batch of a table read past a cursor."""

    # (address key, time in Unix ms) of each row whose address parses.
    rows: list[tuple[int, int]]
    # The highest id read, or the cursor when nothing was.
    last_id: int
    # Whether the batch was as large as asked (more may follow at once).
    full: bool
    # Read under the table's SHARE lock: no id at or below ``last_id`` can still commit.
    exact: bool
    # The table's highest id and identity: a lower id or another oid means it was recreated.
    newest_id: int = 0
    table_oid: int = 0
    table_exists: bool = True


@contextmanager
def _transaction(connection: Any) -> Iterator[Any]:
    """A transaction on an autocommit connection (the one that LISTENs)."""
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        try:
            yield cursor
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")


def _lock(cursor: Any, table: str) -> bool:
    """Take ``table``'s SHARE lock within ``LOCK_TIMEOUT_MS``; False if it was not free."""
    cursor.execute("SAVEPOINT before_lock")
    cursor.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
    try:
        cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")
    except psycopg2.errors.LockNotAvailable:
        cursor.execute("ROLLBACK TO SAVEPOINT before_lock")
        return False
    return True


def _table_oid(cursor: Any, table: str) -> int | None:
    cursor.execute("SELECT to_regclass(%s)::oid", (table,))
    (oid,) = cursor.fetchone()
    return None if oid is None else int(oid)


@dataclass(frozen=True)
class LiftRead:
    """One batch of lifts read past a cursor."""

    # (lift id, what was lifted, time in Unix ms) of each row whose address parses.
    rows: list[tuple[int, Prefix, int]]
    last_id: int
    full: bool
    # Read under the lock: no lift id at or below ``last_id`` can still commit.
    exact: bool


def _past_query(table: str) -> str:
    """The rows of ``table`` past an id, oldest first, at most a batch."""
    return (
        f"SELECT id, ip_address, (extract(epoch FROM time) * 1000)::bigint FROM {table} "  # noqa: S608 (constant table name)
        "WHERE id > %s ORDER BY id LIMIT %s"
    )


def _hit_rows(fetched: list[tuple[Any, Any, Any]]) -> list[tuple[int, int]]:
    """(address key, Unix ms) of each fetched row whose address parses."""
    return [(key, int(ms)) for _, raw, ms in fetched if (key := address_key(str(raw))) is not None]


def _last_id(cursor_id: int, fetched: list[tuple[Any, Any, Any]]) -> int:
    """The highest id of ``fetched`` rows (id first), or ``cursor_id`` when there are none."""
    return max([cursor_id, *(int(row[0]) for row in fetched)])


def _read(connection: Any, table: str, cursor_id: int, batch: int, *, lock: bool) -> TableRead:
    fetched, read = _fetch(connection, table, cursor_id, batch, lock=lock)
    return replace(read, rows=_hit_rows(fetched))


def _fetch(
    connection: Any, table: str, cursor_id: int, batch: int, *, lock: bool
) -> tuple[list[tuple[Any, Any, Any]], TableRead]:
    """The raw rows past ``cursor_id`` and what the read found (its ``rows`` left empty)."""
    with _transaction(connection) as cursor:
        oid = _table_oid(cursor, table)
        if oid is None:
            return [], TableRead([], cursor_id, False, True, table_exists=False)
        exact = _lock(cursor, table) if lock else False
        cursor.execute(_past_query(table), (cursor_id, batch))
        fetched = cursor.fetchall()
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {table}")  # noqa: S608 (constant table name)
        (newest,) = cursor.fetchone()
    last_id = _last_id(cursor_id, fetched)
    return fetched, TableRead([], last_id, len(fetched) == batch, exact, int(newest), oid)


def read_hits(connection: Any, cursor_id: int, *, exact: bool, batch: int = BATCH) -> TableRead:
    """Ledger rows past ``cursor_id``: under the SHARE lock when ``exact`` is asked."""
    return _read(connection, LEDGER_TABLE, cursor_id, batch, lock=exact)


def read_lifts(connection: Any, cursor_id: int, batch: int = BATCH) -> LiftRead:
    """Lift rows past ``cursor_id``, under the lock when it is free (lifts are few and rare)."""
    fetched, read = _fetch(connection, LIFTS_TABLE, cursor_id, batch, lock=True)
    rows = [
        (int(row_id), prefix, int(ms))
        for row_id, raw, ms in fetched
        if (prefix := parse_prefix(str(raw))) is not None
    ]
    return LiftRead(rows, read.last_id, read.full, read.exact)


def hits_since(connection: Any, since_ms: int) -> list[tuple[int, int]]:
    """(address key, Unix ms) of every ledger row later than ``since_ms``.

    What decides whether a lift stands: a ban stays when an address it covers
    was hit after the lift. Lifts are read within a moment of being made, so
    this reads the few rows since.
    """
    with connection.cursor() as cursor:
        if _table_oid(cursor, LEDGER_TABLE) is None:
            return []
        cursor.execute(HITS_SINCE_QUERY, (since_ms,))
        fetched = cursor.fetchall()
    return [(key, int(ms)) for raw, ms in fetched if (key := address_key(str(raw))) is not None]


def newest_hit_id(connection: Any) -> tuple[int, bool]:
    """The ledger's highest id, read under the SHARE lock if free, and whether it was."""
    with _transaction(connection) as cursor:
        if _table_oid(cursor, LEDGER_TABLE) is None:
            return 0, True
        exact = _lock(cursor, LEDGER_TABLE)
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {LEDGER_TABLE}")  # noqa: S608 (constant table name)
        (newest,) = cursor.fetchone()
    return int(newest), exact


def stream_latest_hits(
    connection: Any, between: Callable[[Any], None] | None = None
) -> Iterator[tuple[int, int]]:
    """The latest hit of every address in the ledger, streamed (the ledger may be huge).

    The stream is one transaction (READ COMMITTED) on ``connection``;
    ``between``, if given, is called with ``connection`` after every
    ``STREAM_ROWS`` rows, where it may read the ledger with :func:`peek_hits`
    (each of its statements sees the rows committed since the stream began).
    """
    with _transaction(connection) as cursor:
        if _table_oid(cursor, LEDGER_TABLE) is None:
            return
    connection.autocommit = False
    try:
        with connection.cursor(name="blacklist_rescan") as cursor:
            cursor.itersize = STREAM_ROWS
            cursor.execute(STREAM_QUERY)
            for count, (raw, ms) in enumerate(cursor, start=1):
                key = address_key(str(raw))
                if key is not None:
                    yield key, int(ms)
                if between is not None and count % STREAM_ROWS == 0:
                    between(connection)
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    finally:
        connection.autocommit = True


def peek_hits(connection: Any, cursor_id: int, batch: int) -> TableRead:
    """Ledger rows past ``cursor_id``, read inside the caller's transaction if one is open.

    Not exact (no lock is taken). In a transaction (the rescan's stream) a
    savepoint keeps a failed read from aborting it, and the error is raised.
    """
    in_transaction = not connection.autocommit
    with connection.cursor() as cursor:
        if in_transaction:
            cursor.execute("SAVEPOINT peek")
        try:
            cursor.execute(_past_query(LEDGER_TABLE), (cursor_id, batch))
            fetched = cursor.fetchall()
        except psycopg2.Error:
            if in_transaction:
                cursor.execute("ROLLBACK TO SAVEPOINT peek")
            raise
        if in_transaction:
            cursor.execute("RELEASE SAVEPOINT peek")
    last_id = _last_id(cursor_id, fetched)
    return TableRead(_hit_rows(fetched), last_id, len(fetched) == batch, False)


def latest_hits(connection: Any, keys: list[int]) -> dict[int, int]:
    """The latest hit (Unix ms) of each of ``keys`` that has one, in any form it was written in."""
    forms: list[str] = []
    for key in keys:
        forms.append(key_text(key))
        if not key & IPV6_FLAG:
            forms.append(f"::ffff:{key_text(key)}")
    latest: dict[int, int] = {}
    with connection.cursor() as cursor:
        cursor.execute(LATEST_QUERY, (forms,))
        for raw, ms in cursor.fetchall():
            found = address_key(str(raw))
            if found is not None:
                latest[found] = max(latest.get(found, 0), int(ms))
    return latest


def listen(connection: Any) -> None:
    """Subscribe ``connection`` to the NOTIFY after each ledger insert and each lift."""
    with connection.cursor() as database_cursor:
        database_cursor.execute(f"LISTEN {LEDGER_TABLE}")


def drain_notifications(connection: Any) -> bool:
    """Consume pending notifications; True if there were any. Raises if the link broke."""
    connection.poll()
    if connection.notifies:
        connection.notifies.clear()
        return True
    return False
