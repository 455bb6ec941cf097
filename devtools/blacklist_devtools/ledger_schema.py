"""The ledger's schema for tests and benches, from the service's own tables (``delivery.ledger``).

Tests that fill a ledger by hand (as the service would) create its tables with
this SQL, compiled from the service's SQLAlchemy ``Table`` definitions, so a
column or index added there is in every test's ledger too: never a copy.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from blacklist_service.delivery import ledger


def schema_sql(*tables: Table, leaving_out: Collection[str] = ()) -> str:
    """``CREATE TABLE``/``CREATE INDEX IF NOT EXISTS`` of ``tables`` for PostgreSQL.

    ``leaving_out``: names of indexes not to create (a ledger as an earlier version made it).
    """
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    statements = []
    for table in tables:
        statements.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda found: str(found.name)):
            if index.name not in leaving_out:
                create = CreateIndex(index, if_not_exists=True)
                statements.append(str(create.compile(dialect=dialect)))
    return ";\n".join(statement.strip() for statement in statements) + ";\n"


# The service's ledger and lifts tables, with their indexes.
LEDGER = schema_sql(ledger.ledger)
LIFTS = schema_sql(ledger.lifts)
