"""Fixtures of the service tests: replicas of the service as real processes, an empty ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from blacklist_devtools.postgres import PostgresServer
from tests.service.processes import ServiceFactory


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[ServiceFactory]:
    """Start service processes; they are stopped when the test ends."""
    factory = ServiceFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def empty_ledger(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """The module's PostgreSQL with an empty ledger, running again after the test."""
    connection = postgres.connect()
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_ledger")
    connection.close()
    yield postgres
    postgres.start()


def ledger_addresses(postgres: PostgresServer) -> set[str]:
    """The addresses in the ledger of ``postgres`` (none while the table does not exist)."""
    connection = postgres.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('denied_access_ledger') IS NOT NULL")
            if not cursor.fetchone()[0]:
                return set()
            cursor.execute("SELECT ip_address FROM denied_access_ledger")
            return {str(row[0]) for row in cursor.fetchall()}
    finally:
        connection.close()
