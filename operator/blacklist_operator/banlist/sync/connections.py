"""The ban sync's database connections: finding, opening, LISTENing, watching, closing, back-off.

One connection per instance, opened lazily: the first attempt waits until the
instance's PostgreSQL Deployment is available (or ``FIRST_ATTEMPT_SECONDS`` at
the latest). Opening one can block for seconds (a DNS lookup that times out, a
host that does not answer), so it runs in threads of its own (:class:`Connector`)
and never holds up the passes of connected instances. The connection LISTENs
for the service's ``NOTIFY`` after each ledger insert, and the event loop
watches its descriptor between passes.

While the database is unreachable the instance retries with exponential
back-off: up to ``MAX_BACKOFF_SECONDS`` after a lost connection, up to
``MAX_BACKOFF_NEVER_CONNECTED_SECONDS`` (from 5 s) for a database never
reached; the reasons in ``CONNECT_NOW`` retry at once.

Every connection carries limits of its own (:func:`connect`), because a pass
holds one of the few ban-sync threads shared by every instance: a tenant who
locks their ledger, makes a query slow or whose database host stops answering
must cost that tenant's passes a few seconds, never another tenant's bans.
"""

from __future__ import annotations

import asyncio
import base64
import os
import select
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions

from blacklist_operator.banlist.sync import ledger
from blacklist_operator.builders.database import database_host
from blacklist_operator.builders.naming import POSTGRES_PORT, database_settings_name
from blacklist_operator.model.external import (
    DatabaseSecretError,
    ca_certificate,
    check_host_allowed,
    parse_database_secret,
)
from blacklist_operator.model.knobs import ExternalDatabaseSpec
from blacklist_operator.model.resource import BlacklistService, parse
from blacklist_operator.runtime.state import Runtime
from blacklist_operator.runtime.workqueue import InstanceKey, Reason

MAX_BACKOFF_SECONDS = 30.0
FIRST_BACKOFF_NEVER_CONNECTED_SECONDS = 5.0
MAX_BACKOFF_NEVER_CONNECTED_SECONDS = 300.0
# The first connection waits for the database Deployment, but not longer than this.
FIRST_ATTEMPT_SECONDS = 10.0
# Connection attempts in flight at most (each may wait seconds for DNS or a silent host).
CONNECT_THREADS = 8
# An external database's Secret missing or incomplete is read again this often (it is not
# watched), whatever the back-off: fixing it must not wait minutes.
SECRET_RETRY_SECONDS = 10.0
# Reasons that may open a connection before the back-off has elapsed.
CONNECT_NOW = frozenset({Reason.RETRY, Reason.DATABASE, Reason.ADDRESSES, Reason.BROKEN})

# A host that does not answer the connection attempt.
CONNECT_TIMEOUT_SECONDS = 3
# Any statement waiting this long for a lock fails. Session-wide, so it still holds after
# the ledger reader's SHARE-lock attempt is rolled back to its savepoint (that rollback
# undoes the attempt's own SET LOCAL): a table held in ACCESS EXCLUSIVE mode by the
# tenant then fails the pass in a second instead of blocking its thread for ever.
LOCK_TIMEOUT_MS = 1_000
# Any statement running this long is cancelled by the server (a slow disk, or a tenant's
# view that sleeps). The rescan of a million-address ledger takes about a second.
STATEMENT_TIMEOUT_MS = 15_000
# A peer that stops answering (its packets dropped): an idle connection is probed after
# KEEPALIVES_IDLE s, every KEEPALIVES_INTERVAL s, and dropped after KEEPALIVES_COUNT probes
# unanswered; data sent and not acknowledged within TCP_USER_TIMEOUT_MS drops it too,
# where the kernel's retransmissions alone would wait about 15 minutes.
KEEPALIVES_IDLE_SECONDS = 10
KEEPALIVES_INTERVAL_SECONDS = 5
KEEPALIVES_COUNT = 3
TCP_USER_TIMEOUT_MS = 10_000
# A peer that acknowledges our packets but never answers (a host that is no PostgreSQL, or
# one that stalls on purpose: its kernel answers the keepalives) is cut off by the wait
# callback: no wait for the server lasts longer than this, a statement's included.
ANSWER_TIMEOUT_SECONDS = STATEMENT_TIMEOUT_MS / 1000 + 5


class DatabaseUnavailableError(Exception):
    """The operator cannot reach or log in to the instance's database."""


class DatabaseSecretInvalidError(DatabaseUnavailableError):
    """The Secret of the instance's external database is missing or incomplete."""


def public_message(error: BaseException) -> str:
    """What DatabaseReady says of a failed pass: short, and never libpq's own words.

    libpq's message tells refused from timed out from "not PostgreSQL" for any host
    and port a tenant names, which would make the operator their port scanner; the
    operator's log has it. Our own errors (a Secret incomplete) are said as they are.
    """
    if isinstance(error, psycopg2.Error):
        if error.pgcode is not None:
            # The server answered a query of ours: its SQLSTATE says what to look for.
            return f"a ledger query failed (SQLSTATE {error.pgcode}); details in the operator log"
        return (
            "cannot connect to the database, or the connection was lost (unreachable, "
            "refused or login failed); details in the operator log"
        )
    return " ".join(str(error).split())[:300] or type(error).__name__


def database_address(runtime: Runtime, resource: BlacklistService) -> ledger.DatabaseAddress:
    """Host and port (from the address map or cluster DNS) and credentials (Secret ``N-db``).

    With ``spec.database.external``: all of it from that database's Secret (the
    address map may still override host and port, as for an operator run outside
    the cluster); a missing or incomplete Secret raises :class:`DatabaseSecretInvalidError`.
    """
    if resource.spec.database.external is not None:
        return _external_address(runtime, resource, resource.spec.database.external)
    host, port = runtime.addresses.lookup(
        resource.namespace, resource.name, database_host(resource), POSTGRES_PORT
    )
    secret = runtime.api.get("v1", "Secret", resource.namespace, database_settings_name(resource))
    data = (secret or {}).get("data") or {}
    if "username" not in data or "password" not in data:
        raise DatabaseUnavailableError(
            f"Secret {database_settings_name(resource)} has no credentials yet"
        )
    return ledger.DatabaseAddress(
        host=host,
        port=port,
        database=resource.spec.database.name,
        user=base64.b64decode(data["username"]).decode(),
        password=base64.b64decode(data["password"]).decode(),
    )


def _external_address(
    runtime: Runtime, resource: BlacklistService, external: ExternalDatabaseSpec
) -> ledger.DatabaseAddress:
    secret = runtime.api.get("v1", "Secret", resource.namespace, external.secret_name)
    try:
        database = parse_database_secret(external, resource.spec.database.name, secret)
        check_host_allowed(database, runtime.config.allowed_external_database_hosts)
        certificate = None
        if external.ca is not None:
            # Read by name, as the reconcile reads it (reconcile.database_access).
            ca_body = runtime.api.get("v1", external.ca.kind, resource.namespace, external.ca.name)
            certificate = ca_certificate(external.ca, ca_body)
    except DatabaseSecretError as error:
        raise DatabaseSecretInvalidError(str(error)) from None
    host, port = runtime.addresses.lookup(
        resource.namespace, resource.name, database.host, database.port
    )
    return ledger.DatabaseAddress(
        host=host,
        port=port,
        database=database.database,
        user=database.user,
        password=database.password,
        sslmode=database.sslmode,
        tls=database.tls,
        ca_certificate=certificate,
    )


def wait_for_answer(connection: Any) -> None:
    """psycopg2's wait callback: each wait for the server ends within its limit, or raises.

    With it, psycopg2 drives libpq without blocking and calls this whenever it must
    wait for the socket; raising breaks the connection (which the pass then drops).
    libpq's own ``connect_timeout`` does not apply to a connection made this way, so
    the attempt's limit is enforced here too.
    """
    setting_up = connection.status == psycopg2.extensions.STATUS_SETUP
    limit = CONNECT_TIMEOUT_SECONDS if setting_up else ANSWER_TIMEOUT_SECONDS
    deadline = time.monotonic() + limit
    poller = select.poll()
    while True:
        state = connection.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        descriptor = connection.fileno()
        reading = state == psycopg2.extensions.POLL_READ
        poller.register(descriptor, select.POLLIN if reading else select.POLLOUT)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise psycopg2.OperationalError(f"the database did not answer within {limit:.0f} s")
        poller.unregister(descriptor)


@contextmanager
def ca_file(certificate: str | None) -> Iterator[dict[str, str]]:
    """``sslrootcert`` for libpq: ``certificate`` in an anonymous file of this process.

    libpq takes the CA from a path only, and reads it while connecting. A memfd needs
    no writable directory (the operator's root filesystem is read-only, with no
    ``/tmp``), no other process can open it, and it vanishes when closed, after
    the attempt.
    """
    if certificate is None:
        yield {}
        return
    descriptor = os.memfd_create("blacklist-database-ca")
    try:
        content = certificate.encode()
        while content:
            content = content[os.write(descriptor, content) :]
        yield {"sslrootcert": f"/proc/self/fd/{descriptor}"}
    finally:
        os.close(descriptor)


def connect(address: ledger.DatabaseAddress) -> Any:
    """An autocommit connection to ``address`` with the limits above on every statement."""
    # Process-wide; the ban sync's are the only PostgreSQL connections of the operator.
    psycopg2.extensions.set_wait_callback(wait_for_answer)
    try:
        with ca_file(address.ca_certificate) as root_certificate:
            connection = _connect(address, root_certificate)
    except psycopg2.OperationalError as error:
        # Without blocking, libpq's message no longer says where: the log should.
        where = f"connection to {address.host}:{address.port} failed"
        raise psycopg2.OperationalError(f"{where}: {' '.join(str(error).split())}") from error
    connection.autocommit = True
    try:
        # Set after connecting rather than as startup ``options``, which a connection
        # pooler in front of an external database may refuse.
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = %s", (LOCK_TIMEOUT_MS,))
            cursor.execute("SET statement_timeout = %s", (STATEMENT_TIMEOUT_MS,))
    except psycopg2.Error:
        connection.close()
        raise
    return connection


def _connect(address: ledger.DatabaseAddress, root_certificate: dict[str, str]) -> Any:
    return psycopg2.connect(
        host=address.host,
        port=address.port,
        dbname=address.database,
        user=address.user,
        password=address.password,
        sslmode=address.sslmode,
        **dict(address.tls),
        **root_certificate,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        keepalives=1,
        keepalives_idle=KEEPALIVES_IDLE_SECONDS,
        keepalives_interval=KEEPALIVES_INTERVAL_SECONDS,
        keepalives_count=KEEPALIVES_COUNT,
        tcp_user_timeout=TCP_USER_TIMEOUT_MS,
        application_name="blacklist-operator",
    )


def open_listening(runtime: Runtime, key: InstanceKey) -> Any:
    """A new connection to the instance's ledger, LISTENing (blocking, connect threads)."""
    body = runtime.instances.get(key)
    if body is None:
        raise DatabaseUnavailableError("the instance is gone")
    address = database_address(runtime, parse(body))
    connection = connect(address)
    try:
        ledger.listen(connection)
    except psycopg2.Error:
        connection.close()
        raise
    return connection


class Connector:
    """Opens connections in threads of their own, so a slow attempt delays no pass."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._executor = ThreadPoolExecutor(CONNECT_THREADS, thread_name_prefix="ban-sync-connect")

    def start(
        self, key: InstanceKey, done: Callable[[asyncio.Future[Any]], None]
    ) -> asyncio.Future[Any]:
        """Begin opening a connection for ``key``; ``done`` is called when the attempt ends."""
        attempt = asyncio.get_running_loop().run_in_executor(
            self._executor, open_listening, self._runtime, key
        )
        attempt.add_done_callback(done)
        return attempt

    def shutdown(self) -> None:
        """Stop the threads, dropping attempts not yet begun (at operator exit)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def close_unclaimed(attempt: asyncio.Future[Any]) -> None:
    """Close the connection of a successful attempt whose instance went away meanwhile."""
    if not attempt.cancelled() and attempt.exception() is None:
        attempt.result().close()


@dataclass
class DatabaseLink:
    """One instance's connection, the attempt under way and the back-off between attempts.

    The loop-side methods (:meth:`take_attempt`, :meth:`watch`, :meth:`unwatch`,
    :meth:`close`, :meth:`poll`) run on the event loop; the others in the pass's
    worker thread, while the loop does not watch the connection.
    """

    connection: Any = None
    # The descriptor the event loop watches for NOTIFY (kept: a broken connection forgets it).
    watched_fd: int | None = None
    # The connection attempt under way, in the connect threads.
    connecting: asyncio.Future[Any] | None = None
    ever_connected: bool = False
    backoff: float = 1.0
    last_error: str | None = None
    # monotonic time before which no new connection is attempted (unless woken for it).
    retry_at: float = 0.0

    @classmethod
    def first(cls, database_available: bool) -> DatabaseLink:
        """A new instance's link: connect lazily, once its database Deployment is available."""
        link = cls()
        if not database_available:
            # Wait for the database Deployment (its watch wakes us) or the limit.
            link.retry_at = time.monotonic() + FIRST_ATTEMPT_SECONDS
        return link

    def take_attempt(self) -> BaseException | None:
        """Take the result of an ended attempt: its connection, or the error it ended with."""
        if self.connecting is None or not self.connecting.done():
            return None
        attempt, self.connecting = self.connecting, None
        error = attempt.exception()
        if error is None:
            self.connection = attempt.result()
        return error

    def watch(self, on_readable: Callable[[], None]) -> bool:
        """Have the loop call ``on_readable`` on NOTIFY; True when some came during the pass."""
        connection = self.connection
        if connection is None or connection.closed:
            return False
        notified = bool(connection.notifies)
        # Rows announced during the pass may have committed after its read.
        connection.notifies.clear()
        self.watched_fd = connection.fileno()
        asyncio.get_running_loop().add_reader(self.watched_fd, on_readable)
        return notified

    def unwatch(self) -> None:
        """Stop watching the connection (a pass's thread is about to use it)."""
        if self.watched_fd is not None:
            asyncio.get_running_loop().remove_reader(self.watched_fd)
            self.watched_fd = None

    def poll(self) -> Reason | None:
        """What a readable connection says: LEDGER for notifications, BROKEN when it failed."""
        if self.connection is None:
            return None
        try:
            return Reason.LEDGER if ledger.drain_notifications(self.connection) else None
        except psycopg2.Error:
            self.unwatch()
            return Reason.BROKEN

    def close(self) -> None:
        """Stop watching and close the connection (on the loop, when the instance is gone)."""
        self.unwatch()
        self.drop()

    def drop(self) -> None:
        """Close the connection (from the pass's thread: the loop then re-adds no reader)."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def wait_before_connecting(self, reasons: set[Reason]) -> float:
        """Seconds of back-off left before a new attempt; 0 when one may start now."""
        remaining = self.retry_at - time.monotonic()
        if remaining > 0 and not reasons & CONNECT_NOW:
            return remaining
        return 0.0

    def back_off(self) -> float:
        """After a failure: the seconds to wait before the next attempt (and double it)."""
        if self.ever_connected:
            delay, limit = self.backoff, MAX_BACKOFF_SECONDS
        else:
            # A database never reached is most likely still starting, or not reachable
            # from here at all: hundreds of those must not keep the operator busy.
            delay = max(self.backoff, FIRST_BACKOFF_NEVER_CONNECTED_SECONDS)
            limit = MAX_BACKOFF_NEVER_CONNECTED_SECONDS
        self.backoff = min(delay * 2, limit)
        self.retry_at = time.monotonic() + delay
        return delay

    def retry_in(self, seconds: float) -> float:
        """The next attempt in ``seconds``, whatever the back-off says."""
        self.retry_at = time.monotonic() + seconds
        return seconds

    def new_error(self, message: str) -> bool:
        """Record the failure ``message``; True unless it is the one the last failure had."""
        new = message != self.last_error
        self.last_error = message
        return new

    def succeeded(self) -> None:
        """A pass read the ledger: the next failure backs off from the start again."""
        self.backoff, self.last_error = 1.0, None
