"""The privileges an external database's role needs, exactly as docs/external-database.md says.

The tables exist (created by their owner, as a DBA would); a second role gets
what docs/external-database.md says: ``CONNECT``, ``USAGE`` on the schema, ``SELECT``, ``INSERT``
and ``UPDATE`` on both tables and ``USAGE`` on their id sequences. With them the
service records hits and lifts and the operator's ban sync reads both tables
under their ``SHARE`` lock (an exact read). Without ``UPDATE`` the lock is
refused (SQLSTATE 42501): ``SELECT`` and ``INSERT`` alone are not enough.
"""

from __future__ import annotations

import secrets
from typing import Any

import psycopg2
import psycopg2.errors
import pytest

from blacklist_devtools.postgres import PostgresServer
from blacklist_operator.banlist.sync import connections, ledger
from blacklist_service.delivery.ledger import ensure_schema, insert_hits, insert_lifts, make_engine
from blacklist_service.delivery.outbox import Hit

pytestmark = pytest.mark.postgres

ROLE = "ban_sync_only"
TABLES = "denied_access_ledger, denied_access_lifts"
SEQUENCES = "denied_access_ledger_id_seq, denied_access_lifts_id_seq"


@pytest.fixture(scope="module")
def role(postgres: PostgresServer) -> str:
    """A role with the documented privileges but UPDATE; returns its password."""
    owner = make_engine(postgres.url)
    ensure_schema(owner)
    owner.dispose()
    password = secrets.token_hex(8)
    superuser(
        postgres,
        f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'",
        f"GRANT CONNECT ON DATABASE {postgres.database} TO {ROLE}",
        f"GRANT USAGE ON SCHEMA public TO {ROLE}",
        f"GRANT SELECT, INSERT ON {TABLES} TO {ROLE}",
        f"GRANT USAGE ON SEQUENCE {SEQUENCES} TO {ROLE}",
    )
    return password


def superuser(postgres: PostgresServer, *statements: str) -> None:
    """Run ``statements`` as the superuser in the ledger's database."""
    connection = postgres.superuser_connection(postgres.database)
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


def ban_sync(postgres: PostgresServer, password: str) -> Any:
    """The operator's ban-sync connection, logged in as the restricted role."""
    return connections.connect(
        ledger.DatabaseAddress(
            host=postgres.host,
            port=postgres.port,
            database=postgres.database,
            user=ROLE,
            password=password,
            sslmode="disable",
        )
    )


def test_select_and_insert_are_not_enough_update_is(postgres: PostgresServer, role: str) -> None:
    url = f"postgresql://{ROLE}:{role}@{postgres.host}:{postgres.port}/{postgres.database}"
    service = make_engine(url)
    try:
        # The service needs only what it had: its rows go in.
        ensure_schema(service)
        insert_hits(service, [Hit.now("192.0.2.7", "/blacklisted")])
        insert_lifts(service, ["192.0.2.8"], "test")
    finally:
        service.dispose()
    connection = ban_sync(postgres, role)
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            ledger.read_hits(connection, 0, exact=True)
    finally:
        connection.close()
    superuser(postgres, f"GRANT UPDATE ON {TABLES} TO {ROLE}")
    connection = ban_sync(postgres, role)
    try:
        hits = ledger.read_hits(connection, 0, exact=True)
        assert hits.exact
        assert len(hits.rows) == 1
        assert len(ledger.read_lifts(connection, 0).rows) == 1
    finally:
        connection.close()
