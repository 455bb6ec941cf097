"""The ledger table ``denied_access_ledger`` (docs/CONTRACTS.md) with SQLAlchemy 2 Core.

PostgreSQL in production, a SQLite file when ``DATABASE_URL`` is unset. Rows
are inserted with ``ON CONFLICT (event_id) DO NOTHING``, so delivering a hit
twice (a retry after a lost acknowledgement) leaves one row. On PostgreSQL the
insert's transaction also runs ``NOTIFY denied_access_ledger``, delivered at
commit, so the operator syncs the ban list at once.

Lifted bans are rows of ``denied_access_lifts``, next to the ledger: an
address is banned while its latest ledger row is later than its latest lift
(and, with a ban duration, younger than it). Ledger rows are never deleted:
the ledger stays the audit trail of every hit.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

from blacklist_contract.database import URL_SCHEMES, parse_url
from blacklist_service.outbox import Hit

LEDGER_TABLE = "denied_access_ledger"
LIFTS_TABLE = "denied_access_lifts"

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
lifts = Table(
    LIFTS_TABLE,
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("ip_address", String(45), nullable=False),
    Column("time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("reason", String(256), nullable=False, server_default=""),
)
Index("denied_access_lifts_ip_address", lifts.c.ip_address)


def make_engine(url: str) -> Engine:
    """An engine that fails fast when the database is unreachable and checks pooled connections.

    A PostgreSQL ``url`` the contract refuses raises ``DatabaseUrlError`` (a ValueError).
    """
    if url.startswith("sqlite"):
        # A file on local disk: waiting for another writer's lock is the only delay.
        return create_engine(url, connect_args={"timeout": 30})
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        # Every libpq setting comes from the contract's parse, the one the operator's ban
        # sync makes of the same url: a url SQLAlchemy would read otherwise (a second
        # host in its query) is refused, never half followed. The engine's own url is
        # empty so that nothing of it reaches the driver besides.
        connect_args = {
            **parse_url(url).keywords(),
            "connect_timeout": 5,
            "application_name": "blacklist-service",
            # A hung statement must not hold the delivery worker for ever.
            "options": "-c statement_timeout=15000",
        }
        url = f"{URL_SCHEMES[-1]}://"
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        pool_recycle=600,
        connect_args=connect_args,
    )


def ensure_schema(engine: Engine) -> None:
    """Create the tables and their indexes if they are missing (safe to run at every start)."""
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


def as_utc(moment: datetime) -> datetime:
    """``moment`` with its time zone; SQLite gives back naive UTC times."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def banned_addresses(
    engine: Engine, since: datetime | None = None, batch: int = 10_000
) -> Iterator[list[tuple[str, datetime]]]:
    """Each banned address with its latest hit, in batches (the ledger may hold millions).

    An address lifted after its latest hit is left out, and so is one whose
    latest hit is not later than ``since`` (its ban has expired).
    """
    hits = (
        select(ledger.c.ip_address, func.max(ledger.c.time).label("latest"))
        .group_by(ledger.c.ip_address)
        .subquery("hits")
    )
    lifted = (
        select(lifts.c.ip_address, func.max(lifts.c.time).label("lifted"))
        .group_by(lifts.c.ip_address)
        .subquery("lifted")
    )
    query = (
        select(hits.c.ip_address, hits.c.latest)
        .select_from(hits.outerjoin(lifted, lifted.c.ip_address == hits.c.ip_address))
        .where(or_(lifted.c.lifted.is_(None), lifted.c.lifted < hits.c.latest))
    )
    if since is not None:
        query = query.where(hits.c.latest > since)
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=batch).execute(query)
        for partition in result.partitions():
            yield [(str(row[0]), as_utc(row[1])) for row in partition]


def latest_lifts(engine: Engine) -> Iterator[tuple[str, datetime]]:
    """Each lifted address or prefix with its latest lift (lift rows are an admin's: few)."""
    query = select(lifts.c.ip_address, func.max(lifts.c.time)).group_by(lifts.c.ip_address)
    with engine.connect() as connection:
        for row in connection.execute(query):
            yield str(row[0]), as_utc(row[1])


def latest_hits(engine: Engine, addresses: Collection[str]) -> dict[str, datetime]:
    """The time of the latest ledger row of each of ``addresses`` that has one."""
    if not addresses:
        return {}
    query = (
        select(ledger.c.ip_address, func.max(ledger.c.time))
        .where(ledger.c.ip_address.in_(list(addresses)))
        .group_by(ledger.c.ip_address)
    )
    with engine.connect() as connection:
        return {str(row[0]): as_utc(row[1]) for row in connection.execute(query)}


@dataclass(frozen=True)
class Lift:
    """One row of the lift table."""

    id: int
    ip_address: str
    time: datetime


def latest_lift_id(engine: Engine) -> int:
    """The highest id in the lift table (0 when it is empty)."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.coalesce(func.max(lifts.c.id), 0))).scalar_one())


def lifts_after(engine: Engine, cursor: int, since: datetime, limit: int = 10_000) -> list[Lift]:
    """Lifts with an id above ``cursor`` or a time after ``since``, by id.

    Rows can commit out of id order, so a reader following an id cursor also
    reads a window of recent ones again.
    """
    query = (
        select(lifts.c.id, lifts.c.ip_address, lifts.c.time)
        .where(or_(lifts.c.id > cursor, lifts.c.time > since))
        .order_by(lifts.c.id)
        .limit(limit)
    )
    with engine.connect() as connection:
        return [Lift(int(r[0]), str(r[1]), as_utc(r[2])) for r in connection.execute(query)]


def insert_lifts(engine: Engine, addresses: Sequence[str], reason: str) -> list[Lift]:
    """Add one lift per address, stamped with the database's time, and notify listeners."""
    rows: list[dict[str, Any]] = [{"ip_address": a, "reason": reason} for a in addresses]
    if engine.dialect.name != "postgresql":
        # SQLite's CURRENT_TIMESTAMP has whole seconds only; the ledger's times do not.
        for row in rows:
            row["time"] = datetime.now(UTC)
    made: list[Lift] = []
    with engine.begin() as connection:
        for row in rows:
            inserted = connection.execute(
                insert(lifts).values(row).returning(lifts.c.id, lifts.c.ip_address, lifts.c.time)
            ).one()
            made.append(Lift(int(inserted[0]), str(inserted[1]), as_utc(inserted[2])))
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"NOTIFY {LEDGER_TABLE}"))
    return made
