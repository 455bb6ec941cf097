"""The ledger table ``denied_access_ledger`` (docs/CONTRACTS.md) with SQLAlchemy 2 Core.

PostgreSQL in production, a SQLite file when ``DATABASE_URL`` is unset. Rows
are inserted with ``ON CONFLICT (event_id) DO NOTHING``, so delivering a hit
twice (a retry after a lost acknowledgement) leaves one row. On PostgreSQL the
insert's transaction also runs ``NOTIFY denied_access_ledger``, delivered at
commit, so the operator syncs the ban list at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

from blacklist_service.outbox import Hit

LEDGER_TABLE = "denied_access_ledger"

metadata = MetaData()
ledger = Table(
    LEDGER_TABLE,
    metadata,
    # BIGSERIAL on PostgreSQL; SQLite auto-increments only an INTEGER primary key.
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("path", String(2048), nullable=False),
    Column("ip_address", String(45), nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),
)
Index("denied_access_ledger_ip_address", ledger.c.ip_address)


def make_engine(url: str) -> Engine:
    """An engine that fails fast when the database is unreachable and checks pooled connections."""
    if url.startswith("sqlite"):
        # A file on local disk: waiting for another writer's lock is the only delay.
        return create_engine(url, connect_args={"timeout": 30})
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        connect_args = {
            "connect_timeout": 5,
            "application_name": "blacklist-service",
            # A hung statement must not hold the delivery worker for ever.
            "options": "-c statement_timeout=15000",
        }
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        pool_recycle=600,
        connect_args=connect_args,
    )


def ensure_schema(engine: Engine) -> None:
    """Create the table and its index if they are missing (safe to run at every start)."""
    metadata.create_all(engine, checkfirst=True)


def insert_hits(engine: Engine, hits: Sequence[Hit]) -> None:
    """Add the hits' rows (each at most once, by ``event_id``) and notify listeners."""
    if not hits:
        return
    rows = [
        {"event_id": h.event_id, "path": h.path, "ip_address": h.ip_address, "time": h.time}
        for h in hits
    ]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            statement = postgresql.insert(ledger).on_conflict_do_nothing(
                index_elements=["event_id"]
            )
            connection.execute(statement, rows)
            connection.execute(text(f"NOTIFY {LEDGER_TABLE}"))
        else:
            connection.execute(
                sqlite.insert(ledger).on_conflict_do_nothing(index_elements=["event_id"]), rows
            )


def banned_addresses(engine: Engine, batch: int = 10_000) -> Iterator[list[str]]:
    """Every distinct address in the ledger, in batches (the ledger may hold millions)."""
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=batch).execute(
            select(ledger.c.ip_address).distinct()
        )
        for partition in result.partitions():
            yield [str(row[0]) for row in partition]
