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

import logging
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg2.errors
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
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex

from blacklist_contract.database import URL_SCHEMES, parse_url
from blacklist_contract.tables import LEDGER_TABLE, LIFTS_TABLE
from blacklist_service.delivery.outbox import Hit

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
# The operator's lift of a range wider than one ban reads the hits since the lift
# (``WHERE time > ...``): without it, a scan of the whole ledger per such lift.
Index("denied_access_ledger_time", ledger.c.time)
lifts = Table(
    LIFTS_TABLE,
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("ip_address", String(45), nullable=False),
    Column("time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("reason", String(256), nullable=False, server_default=""),
)
Index("denied_access_lifts_ip_address", lifts.c.ip_address)


# Bounds on every PostgreSQL connection of the service (the ledger thread, its lift
# follower, the lift command). Whoever holds the database (a tenant's
# ``LOCK TABLE denied_access_ledger IN ACCESS EXCLUSIVE MODE``, a long migration) or
# loses it (a blackholed route) must not hold the ledger thread for ever: it gives up,
# backs off and retries, while the mail thread goes on. Lock and statement timeouts are
# startup parameters of the session, so no ROLLBACK (TO SAVEPOINT) ever undoes them.
CONNECT_TIMEOUT = 5  # seconds to connect, per address tried
LOCK_TIMEOUT_MS = 3_000  # waiting for a table or row lock
STATEMENT_TIMEOUT_MS = 15_000  # any one statement
# Building an index missing from a ledger made by an earlier version, once, at start: a
# large ledger takes longer than any one statement may (inserts wait meanwhile; hits
# stay in the outbox).
INDEX_BUILD_TIMEOUT_MS = 120_000
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000  # the server ends a transaction we left hanging
# A silent peer: an idle connection is probed after 10 s, then every 5 s, dropped after
# 3 unanswered probes; data unacknowledged for 20 s drops it too (a blackhole swallows
# packets without a reset, which otherwise takes the kernel about 15 minutes).
KEEPALIVES_IDLE = 10
KEEPALIVES_INTERVAL = 5
KEEPALIVES_COUNT = 3
TCP_USER_TIMEOUT_MS = 20_000


def postgres_connect_args() -> dict[str, Any]:
    """The libpq connection parameters that bound every wait on PostgreSQL (see above)."""
    return {
        "connect_timeout": CONNECT_TIMEOUT,
        "application_name": "blacklist-service",
        "options": (
            f"-c lock_timeout={LOCK_TIMEOUT_MS} -c statement_timeout={STATEMENT_TIMEOUT_MS} "
            f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
        ),
        "keepalives": 1,
        "keepalives_idle": KEEPALIVES_IDLE,
        "keepalives_interval": KEEPALIVES_INTERVAL,
        "keepalives_count": KEEPALIVES_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
    }


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
        # empty so that nothing of it reaches the driver besides; the bounds on every
        # wait come after, so the url cannot lift them.
        connect_args = {**parse_url(url).keywords(), **postgres_connect_args()}
        url = f"{URL_SCHEMES[-1]}://"
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        pool_recycle=600,
        connect_args=connect_args,
    )


logger = logging.getLogger("blacklist_service.ledger")


def ensure_schema(engine: Engine) -> None:
    """Create the tables and their indexes if they are missing (safe to run at every start).

    ``create_all`` makes the indexes of the tables it creates only; an index added
    since (``denied_access_ledger_time``) is made on an existing table too, with
    ``CREATE INDEX IF NOT EXISTS``.
    """
    metadata.create_all(engine, checkfirst=True)
    for table in metadata.sorted_tables:
        for index in sorted(table.indexes, key=lambda found: str(found.name)):
            _ensure_index(engine, table, index)


def _ensure_index(engine: Engine, table: Table, index: Index) -> None:
    """Make ``index`` if it is missing; a failure is logged, never fatal.

    Without it the service works the same (the operator's lifts of wide ranges
    read more); it fails where the role does not own the table (an external
    database: its owner makes the index, docs/service.md) or when another
    replica makes it at the same moment. The next start tries again.
    """
    try:
        with engine.begin() as connection:
            # Looked up first: CREATE INDEX locks the table (SHARE, against inserts) before
            # it finds that the index exists, and every replica runs this at every start.
            if engine.dialect.has_index(connection, table.name, str(index.name)):
                return
            if engine.dialect.name == "postgresql":
                connection.execute(text(f"SET LOCAL statement_timeout = {INDEX_BUILD_TIMEOUT_MS}"))
            connection.execute(CreateIndex(index, if_not_exists=True))
    except DBAPIError as error:
        logger.warning("Could not create index %s: %s", index.name, error.orig or error)


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


@dataclass(frozen=True)
class LiftRead:
    """Lifts read past a cursor, and whether the read was exact."""

    lifts: list[Lift]
    # No lift with an id at or below the highest one read can still commit: a
    # cursor may move up to it. Otherwise a lift with a lower id may commit later.
    exact: bool
    # The role may not take the lock (it lacks UPDATE on the table).
    refused: bool = False


# How long a lift reader waits for the lift table's SHARE lock before reading without it.
LIFT_LOCK_TIMEOUT_MS = 250
# Errors of the lock after which the lifts are read without it.
UNLOCKED_READ_ERRORS = (psycopg2.errors.LockNotAvailable, psycopg2.errors.InsufficientPrivilege)


def read_lifts(engine: Engine, cursor: int, limit: int = 10_000) -> LiftRead:
    """Lifts with an id above ``cursor``, by id, read under the table's SHARE lock if free.

    Ids are drawn when a row is inserted, not when it commits, so a long lift
    transaction can commit an id below one already read. Every ``INSERT``
    holds ``ROW EXCLUSIVE`` on the table until it commits, so while this read
    holds ``SHARE`` no id can still appear below the highest one read: such a
    read is exact (docs/CONTRACTS.md, "Lift table"). When the lock is not free
    within ``LIFT_LOCK_TIMEOUT_MS`` (a lift transaction still open) the read goes
    ahead without it and says so. SQLite has one writer at a time, whose ids
    are visible only once it commits, in id order: its reads are always exact.
    """
    query = (
        select(lifts.c.id, lifts.c.ip_address, lifts.c.time)
        .where(lifts.c.id > cursor)
        .order_by(lifts.c.id)
        .limit(limit)
    )
    exact, refused = True, False
    if engine.dialect.name == "postgresql":
        # Its own transaction: a lock that timed out leaves a transaction that can
        # only roll back, and rolling a savepoint back would undo the time-out too.
        try:
            with engine.begin() as connection:
                connection.execute(text(f"SET LOCAL lock_timeout = {LIFT_LOCK_TIMEOUT_MS}"))
                connection.execute(text(f"LOCK TABLE {LIFTS_TABLE} IN SHARE MODE"))
                rows = connection.execute(query).all()
            return LiftRead([Lift(int(r[0]), str(r[1]), as_utc(r[2])) for r in rows], True)
        except DBAPIError as error:
            # A role without UPDATE on the table may not take the lock: read without
            # it, never advancing the cursor (docs/CONTRACTS.md names the privilege).
            if not isinstance(error.orig, UNLOCKED_READ_ERRORS):
                raise
            refused = isinstance(error.orig, psycopg2.errors.InsufficientPrivilege)
        exact = False
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return LiftRead([Lift(int(r[0]), str(r[1]), as_utc(r[2])) for r in rows], exact, refused)


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
