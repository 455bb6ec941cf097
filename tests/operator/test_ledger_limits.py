"""The ban sync's connection limits against a real PostgreSQL, no cluster needed.

A pass holds one of the few ban-sync threads every instance shares. A tenant
who holds their ledger in ``ACCESS EXCLUSIVE`` mode, or whose query never ends,
must fail their own pass within seconds and hand the thread back; the
cluster-level proof that another tenant's ban still arrives is in
``test_tenant_isolation``.
"""

from __future__ import annotations

import functools
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import pytest

from blacklist_devtools.postgres import PostgresServer
from blacklist_operator.banlist.sync import connections, ledger
from tests.operator.test_banlist_sync import create_table, insert

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def ledger_table(postgres: PostgresServer) -> PostgresServer:
    """The module's PostgreSQL with a fresh ledger table holding one row."""
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_ledger, real_ledger")
    create_table(postgres)
    insert(postgres, ["203.0.113.1"])
    return postgres


@pytest.fixture
def operator_connection(ledger_table: PostgresServer) -> Iterator[Any]:
    """A connection as the ban sync opens it."""
    address = ledger.DatabaseAddress(
        host=ledger_table.host,
        port=ledger_table.port,
        database=ledger_table.database,
        user=ledger_table.user,
        password=ledger_table.password,
        sslmode="disable",
    )
    connection = connections.connect(address)
    yield connection
    connection.close()


def outcome_within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread: the error it ended with, or fail if it took over ``seconds``."""
    ended: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            ended.append(None)
        except BaseException as error:  # handed to the test's thread
            ended.append(error)

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert ended, f"the read was still waiting after {time.monotonic() - started:.1f} s"
    return ended[0]


def test_a_ledger_locked_by_its_tenant_fails_the_read_within_seconds(
    ledger_table: PostgresServer, operator_connection: Any
) -> None:
    holder = ledger_table.connect()
    try:
        with holder.cursor() as cursor:
            # As a tenant would, in their own database: the transaction stays open.
            cursor.execute("LOCK TABLE denied_access_ledger IN ACCESS EXCLUSIVE MODE")
            for exact in (True, False):
                error = outcome_within(
                    5, functools.partial(ledger.read_hits, operator_connection, 0, exact=exact)
                )
                assert isinstance(error, psycopg2.errors.LockNotAvailable), error
            error = outcome_within(5, lambda: ledger.read_lifts(operator_connection, 0))
            # The lift table does not exist here: the read does not touch a locked table.
            assert error is None
    finally:
        holder.rollback()
        holder.close()
    # Once the tenant lets go, the same connection reads again.
    read = ledger.read_hits(operator_connection, 0, exact=True)
    assert read.exact
    assert len(read.rows) == 1


def test_a_row_held_in_an_open_insert_still_reads_without_the_lock(
    ledger_table: PostgresServer, operator_connection: Any
) -> None:
    """The ordinary case the SHARE lock's own short timeout is for is not refused."""
    writer = ledger_table.connect()
    try:
        with writer.cursor() as cursor:
            cursor.execute(
                "INSERT INTO denied_access_ledger (event_id, path, ip_address, time) "
                "VALUES ('open', '/blacklisted', '203.0.113.2', now())"
            )
            read = ledger.read_hits(operator_connection, 0, exact=True)
    finally:
        writer.rollback()
        writer.close()
    assert not read.exact
    assert len(read.rows) == 1


def test_a_statement_that_never_ends_is_cancelled(
    ledger_table: PostgresServer, operator_connection: Any
) -> None:
    with ledger_table.connect() as connection, connection.cursor() as cursor:
        cursor.execute("ALTER TABLE denied_access_ledger RENAME TO real_ledger")
        # A tenant's own database: the "ledger" may be anything, here a view that sleeps.
        cursor.execute(
            "CREATE VIEW denied_access_ledger AS "
            "SELECT real_ledger.* FROM real_ledger, LATERAL (SELECT pg_sleep(3600)) AS slow"
        )
    try:
        limit = connections.STATEMENT_TIMEOUT_MS / 1000
        started = time.monotonic()
        error = outcome_within(
            limit + 10, lambda: ledger.read_hits(operator_connection, 0, exact=False)
        )
        assert isinstance(error, psycopg2.errors.QueryCanceled), error
        assert time.monotonic() - started < limit + 5
    finally:
        with ledger_table.connect() as connection, connection.cursor() as cursor:
            cursor.execute("DROP VIEW denied_access_ledger")
            cursor.execute("ALTER TABLE real_ledger RENAME TO denied_access_ledger")


def silent_after_login(listener: socket.socket, clients: list[socket.socket]) -> None:
    """A server that logs any client in, as PostgreSQL would, then never answers again.

    What a tenant can point an external database at: its kernel acknowledges every
    packet and keepalive, so nothing below the protocol notices the silence. The
    connections it accepted go to ``clients``, for the test to close.
    """
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        clients.append(client)
        try:
            length = struct.unpack("!I", client.recv(4))[0]
            client.recv(length - 4)
            client.sendall(b"R" + struct.pack("!II", 8, 0))  # AuthenticationOk
            for key, value in ((b"client_encoding", b"UTF8"), (b"server_version", b"16.0")):
                body = key + b"\0" + value + b"\0"
                client.sendall(b"S" + struct.pack("!I", len(body) + 4) + body)
            client.sendall(b"Z" + struct.pack("!I", 5) + b"I")  # ReadyForQuery, then nothing
        except (OSError, struct.error):
            continue  # The test closed it, or the client gave up: next one.


def test_a_database_that_never_answers_fails_the_connection_within_the_limit() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    clients: list[socket.socket] = []
    server = threading.Thread(target=silent_after_login, args=(listener, clients), daemon=True)
    server.start()
    address = ledger.DatabaseAddress(
        host="127.0.0.1",
        port=listener.getsockname()[1],
        database="ledger",
        user="tenant",
        password="",
        sslmode="disable",
    )
    try:
        started = time.monotonic()
        # connect() itself sends its SETs: they are the first statements left unanswered.
        error = outcome_within(
            connections.ANSWER_TIMEOUT_SECONDS + 10, functools.partial(connections.connect, address)
        )
        elapsed = time.monotonic() - started
        assert isinstance(error, psycopg2.OperationalError), error
        assert "did not answer" in str(error)
        assert elapsed < connections.ANSWER_TIMEOUT_SECONDS + 2
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # Wakes the accept() of the server thread.
        listener.close()
        server.join(5)
        for client in clients:
            client.close()
