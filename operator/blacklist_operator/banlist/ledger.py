"""Reading the ledger table ``denied_access_ledger`` incrementally, with an id cursor.

Rows can commit out of ``id`` order (concurrent transactions), so each read
starts ``WINDOW`` ids behind the cursor; bans are a set, so rows read twice are
harmless. Each read returns at most ``BATCH`` rows, which bounds the cost of
one cycle; a caller loops while a read comes back full.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

LEDGER_TABLE = "denied_access_ledger"
WINDOW = 1000
BATCH = 50_000


@dataclass(frozen=True)
class DatabaseAddress:
    """Where and as whom the operator connects to one instance's PostgreSQL."""

    host: str
    port: int
    database: str
    user: str
    password: str


@dataclass(frozen=True)
class LedgerRead:
    """One batch of the ledger: normalised addresses and the new cursor."""

    addresses: list[str]
    cursor: int
    full: bool
    table_exists: bool = True


def connect(address: DatabaseAddress, *, autocommit: bool = True) -> Any:
    """A connection that gives up quickly when the database is unreachable."""
    connection = psycopg2.connect(
        host=address.host,
        port=address.port,
        dbname=address.database,
        user=address.user,
        password=address.password,
        connect_timeout=3,
        application_name="blacklist-operator",
    )
    connection.autocommit = autocommit
    return connection


def normalise(raw: str) -> str | None:
    """The canonical text of an address (``::ffff:1.2.3.4`` → ``1.2.3.4``), or None."""
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def read_since(connection: Any, cursor: int, batch: int = BATCH) -> LedgerRead:
    """Rows from ``WINDOW`` ids behind ``cursor`` on, at most ``batch`` of them."""
    low = max(0, cursor - WINDOW)
    try:
        with connection.cursor() as database_cursor:
            database_cursor.execute(
                f"SELECT id, ip_address FROM {LEDGER_TABLE} WHERE id > %s ORDER BY id LIMIT %s",  # noqa: S608 (constant table name)
                (low, batch),
            )
            rows = database_cursor.fetchall()
    except psycopg2.errors.UndefinedTable:
        # The service creates the table on its first start; until then nothing is banned.
        connection.rollback()
        return LedgerRead(addresses=[], cursor=cursor, full=False, table_exists=False)
    addresses = [address for _, raw in rows if (address := normalise(str(raw))) is not None]
    new_cursor = max([cursor, *(int(row_id) for row_id, _ in rows)])
    return LedgerRead(addresses=addresses, cursor=new_cursor, full=len(rows) == batch)


def read_all(connection: Any, limit: int) -> LedgerRead:
    """Every distinct address in the ledger (at most ``limit``), for a full rescan.

    The cursor is the highest id before the read: rows committed later are
    picked up by the next incremental read, which starts a window behind it.
    """
    try:
        with connection.cursor() as database_cursor:
            database_cursor.execute(f"SELECT coalesce(max(id), 0) FROM {LEDGER_TABLE}")  # noqa: S608 (constant table name)
            (cursor,) = database_cursor.fetchone()
            database_cursor.execute(
                f"SELECT DISTINCT ip_address FROM {LEDGER_TABLE} LIMIT %s",  # noqa: S608 (constant table name)
                (limit,),
            )
            rows = database_cursor.fetchall()
    except psycopg2.errors.UndefinedTable:
        connection.rollback()
        return LedgerRead(addresses=[], cursor=0, full=False, table_exists=False)
    addresses = [address for (raw,) in rows if (address := normalise(str(raw))) is not None]
    return LedgerRead(addresses=addresses, cursor=int(cursor), full=len(rows) == limit)


def listen(connection: Any) -> None:
    """Subscribe ``connection`` to the service's NOTIFY after each ledger insert."""
    with connection.cursor() as database_cursor:
        database_cursor.execute(f"LISTEN {LEDGER_TABLE}")


def drain_notifications(connection: Any) -> bool:
    """Consume pending notifications; True if there were any. Raises if the link broke."""
    connection.poll()
    if connection.notifies:
        connection.notifies.clear()
        return True
    return False
