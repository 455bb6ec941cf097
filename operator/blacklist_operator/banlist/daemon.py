"""The ban sync of every BlacklistService, multiplexed over a few shared workers.

The first pass of an instance loads its ban list and makes sure ``N-banlist``
exists. One connection per instance, opened lazily: the first attempt waits
until the instance's PostgreSQL Deployment is available (or
``FIRST_ATTEMPT_SECONDS`` at the latest). The connection LISTENs for the
service's ``NOTIFY`` after each ledger insert and is watched by the event loop
itself, so a new ban reaches the ConfigMaps within a database round trip and
one apply; a bounded poll (``--ban-poll-interval``) catches a lost
notification, and a bounded full rescan (``--ban-rescan-interval``) drops
addresses whose ledger rows were deleted. The blocking steps (queries, applies)
run in a small thread pool of their own, so an unreachable database never
delays a reconcile.

While the database is unreachable an instance reports ``DatabaseReady=False``,
keeps its last synced list and retries with exponential back-off: up to
``MAX_BACKOFF_SECONDS`` after a lost connection, up to
``MAX_BACKOFF_NEVER_CONNECTED_SECONDS`` (from 5 s) for a database never reached; the
Deployment becoming available or the address map changing retries at once.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import urllib3

from blacklist_operator.apply import ApiError
from blacklist_operator.banlist import ledger
from blacklist_operator.banlist.sync import BanListSync, SyncReport
from blacklist_operator.builders.database import database_host
from blacklist_operator.builders.naming import (
    MAX_BANLIST_SHARDS,
    POSTGRES_PORT,
    database_settings_name,
)
from blacklist_operator.builders.status import (
    BANLIST_SYNCED,
    DATABASE_READY,
    build_condition,
    condition_changed,
    merge_condition,
    now,
)
from blacklist_operator.model import BlacklistService, SpecError, parse
from blacklist_operator.runtime import Logger, Runtime
from blacklist_operator.workqueue import InstanceKey, Reason

# A second field manager, so the ban sync's status fields and the reconcile's
# (Ready, observedGeneration) never remove each other under server-side apply.
STATUS_MANAGER = "blacklist-operator-banlist"
MAX_BACKOFF_SECONDS = 30.0
FIRST_BACKOFF_NEVER_CONNECTED_SECONDS = 5.0
MAX_BACKOFF_NEVER_CONNECTED_SECONDS = 300.0
# The first connection waits for the database Deployment, but not longer than this.
FIRST_ATTEMPT_SECONDS = 10.0
# How often the address map file is checked for changed entries.
ADDRESS_MAP_CHECK_SECONDS = 2.0
# Connection attempts in flight at most (each may wait seconds for DNS or a silent host).
CONNECT_THREADS = 8
# Reasons that may open a connection before the back-off has elapsed.
CONNECT_NOW = frozenset({Reason.RETRY, Reason.DATABASE, Reason.ADDRESSES, Reason.BROKEN})


class DatabaseUnavailableError(Exception):
    """The operator cannot reach or log in to the instance's database."""


def database_address(runtime: Runtime, bls: BlacklistService) -> ledger.DatabaseAddress:
    """Host and port (from the address map or cluster DNS) and credentials (Secret ``N-db``)."""
    host, port = runtime.addresses.lookup(
        bls.namespace, bls.name, database_host(bls), POSTGRES_PORT
    )
    secret = runtime.api.get("v1", "Secret", bls.namespace, database_settings_name(bls))
    data = (secret or {}).get("data") or {}
    if "username" not in data or "password" not in data:
        raise DatabaseUnavailableError(
            f"Secret {database_settings_name(bls)} has no credentials yet"
        )
    return ledger.DatabaseAddress(
        host=host,
        port=port,
        database=bls.spec.database.name,
        user=base64.b64decode(data["username"]).decode(),
        password=base64.b64decode(data["password"]).decode(),
    )


def report_status(
    runtime: Runtime,
    bls: BlacklistService,
    body: Mapping[str, Any],
    database: tuple[bool, str, str],
    synced: tuple[bool, str, str],
    count: int,
) -> None:
    """Apply DatabaseReady, BanListSynced and bannedCount if any of them changed."""
    status = body.get("status") or {}
    current = status.get("conditions")
    at = now()
    conditions = [
        merge_condition(current, build_condition(DATABASE_READY, *database, bls.generation, at)),
        merge_condition(current, build_condition(BANLIST_SYNCED, *synced, bls.generation, at)),
    ]
    if status.get("bannedCount") == count and not any(
        condition_changed(current, condition) for condition in conditions
    ):
        return
    fields = {"bannedCount": count, "conditions": conditions}
    runtime.api.apply_status(bls.namespace, bls.name, fields, STATUS_MANAGER)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def _synced(report: SyncReport) -> tuple[bool, str, str]:
    if report.overflow:
        return (
            False,
            "BanListFull",
            f"{report.overflow} addresses left out: the ban list is limited to "
            f"{MAX_BANLIST_SHARDS} ConfigMaps",
        )
    if not report.table_exists:
        return True, "LedgerNotCreated", "the ledger table does not exist yet; nothing is banned"
    return True, "Synced", f"{report.count} addresses, ledger read up to row {report.cursor}"


@dataclass
class InstanceState:
    """What the ban sync keeps of one instance between passes."""

    sync: BanListSync
    loaded: bool = False
    connection: Any = None
    # The descriptor the event loop watches for NOTIFY (kept: a broken connection forgets it).
    watched_fd: int | None = None
    ever_connected: bool = False
    backoff: float = 1.0
    last_error: str | None = None
    # monotonic time before which no new connection is attempted (unless woken for it).
    retry_at: float = 0.0
    # monotonic time of the last full rescan of the ledger.
    rescanned_at: float = field(default_factory=time.monotonic)
    timer: asyncio.TimerHandle | None = None
    # The connection attempt under way, in the connect threads.
    connecting: asyncio.Future[Any] | None = None


class BanSyncSupervisor:
    """Runs the ban sync of every instance: a few workers take instances from a queue."""

    def __init__(self, runtime: Runtime, logger: Logger, threads: int = 4) -> None:
        self._runtime = runtime
        self._logger = logger
        self._threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="ban-sync")
        self._connect_executor = ThreadPoolExecutor(
            CONNECT_THREADS, thread_name_prefix="ban-sync-connect"
        )
        self._states: dict[InstanceKey, InstanceState] = {}

    def tasks(self) -> list[asyncio.Task[None]]:
        """The worker tasks and the address-map check, to be cancelled at shutdown."""
        loop = asyncio.get_running_loop()
        workers = [loop.create_task(self._work()) for _ in range(self._threads)]
        return [*workers, loop.create_task(self._watch_address_map())]

    def shutdown(self) -> None:
        """Close every connection and stop the threads (at operator exit)."""
        for key in list(self._states):
            self._forget(key)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._connect_executor.shutdown(wait=False, cancel_futures=True)

    async def _watch_address_map(self) -> None:
        loop = asyncio.get_running_loop()
        known = await loop.run_in_executor(self._executor, self._runtime.addresses.entries)
        while True:
            await asyncio.sleep(ADDRESS_MAP_CHECK_SECONDS)
            entries = await loop.run_in_executor(self._executor, self._runtime.addresses.entries)
            changed = {k for k in entries.keys() | known.keys() if entries.get(k) != known.get(k)}
            known = entries
            for entry in changed:
                namespace, _, name = entry.partition("/")
                state = self._states.get((namespace, name))
                # Only the instances whose address changed retry at once, not every one waiting.
                if state is not None and state.connection is None:
                    self._runtime.banlists.wake((namespace, name), Reason.ADDRESSES)

    async def _work(self) -> None:
        queue = self._runtime.banlists
        while True:
            key, reasons = await queue.take()
            try:
                await self._pass(key, reasons)
            except Exception as error:  # one instance must never stop the others
                self._logger.exception(f"Ban sync of {key[0]}/{key[1]} failed: {error}")
                self._schedule(key, MAX_BACKOFF_SECONDS, Reason.RETRY)
            finally:
                queue.done(key)

    def _forget(self, key: InstanceKey) -> None:
        state = self._states.pop(key, None)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
        self._close(state)
        self._runtime.written_shards.forget_instance(*key)

    def _close(self, state: InstanceState) -> None:
        self._unwatch(state)
        if state.connection is not None:
            state.connection.close()
            state.connection = None

    def _unwatch(self, state: InstanceState) -> None:
        if state.watched_fd is not None:
            asyncio.get_running_loop().remove_reader(state.watched_fd)
            state.watched_fd = None

    def _schedule(self, key: InstanceKey, delay: float, reason: Reason) -> None:
        """The next pass of ``key`` in ``delay`` seconds (replacing the one planned)."""
        state = self._states.get(key)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
        state.timer = asyncio.get_running_loop().call_later(
            delay, self._runtime.banlists.wake, key, reason
        )

    async def _pass(self, key: InstanceKey, reasons: set[Reason]) -> None:
        body = self._runtime.instances.get(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            self._forget(key)
            return
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = InstanceState(
                BanListSync(self._runtime.api, self._runtime.written_shards)
            )
            # The database Deployment is N-postgres (builders.naming.database_name).
            database = self._runtime.deployments.get((key[0], f"{key[1]}-postgres"))
            if not (database and database[0]):
                # Connect lazily: wait for the database Deployment (it wakes us) or the limit.
                state.retry_at = time.monotonic() + FIRST_ATTEMPT_SECONDS
        loop = asyncio.get_running_loop()
        connect_error: BaseException | None = None
        if state.connecting is not None and state.connecting.done():
            attempt, state.connecting = state.connecting, None
            connect_error = attempt.exception()
            if connect_error is None:
                state.connection = attempt.result()
        # The worker thread reads the connection now; the loop must not poll it meanwhile.
        self._unwatch(state)
        delay, reason, connect = await loop.run_in_executor(
            self._executor, self._step, key, state, reasons, connect_error
        )
        if connect and state.connecting is None:
            # Opening a connection can block for seconds (a DNS lookup that times out, a
            # host that does not answer): it runs in threads of its own and wakes us when
            # done, so it never holds up the passes of the connected instances.
            state.connecting = loop.run_in_executor(self._connect_executor, self._open, key)
            state.connecting.add_done_callback(lambda attempt: self._opened(key, state, attempt))
        connection = state.connection
        if connection is not None and not connection.closed:
            if connection.notifies:
                # Rows announced during the pass may have committed after its read.
                connection.notifies.clear()
                self._runtime.banlists.wake(key, Reason.LEDGER)
            state.watched_fd = connection.fileno()
            loop.add_reader(state.watched_fd, self._on_readable, key)
        self._schedule(key, delay, reason)

    def _on_readable(self, key: InstanceKey) -> None:
        state = self._states.get(key)
        if state is None or state.connection is None:
            return
        try:
            if ledger.drain_notifications(state.connection):
                self._runtime.banlists.wake(key, Reason.LEDGER)
        except psycopg2.Error:
            self._unwatch(state)
            self._runtime.banlists.wake(key, Reason.BROKEN)

    def _opened(self, key: InstanceKey, state: InstanceState, attempt: asyncio.Future[Any]) -> None:
        """A connection attempt ended: its instance's next pass takes the result."""
        if self._states.get(key) is state:
            self._runtime.banlists.wake(key, Reason.CONNECTED)
        elif not attempt.cancelled() and attempt.exception() is None:
            attempt.result().close()  # The instance went away meanwhile.

    def _open(self, key: InstanceKey) -> Any:
        """A new connection to the instance's ledger, LISTENing (blocking, connect threads)."""
        body = self._runtime.instances.get(key)
        if body is None:
            raise DatabaseUnavailableError("the instance is gone")
        bls = parse(body)
        address = database_address(self._runtime, bls)
        connection = ledger.connect(address)
        try:
            ledger.listen(connection)
        except psycopg2.Error:
            connection.close()
            raise
        return connection

    def _step(
        self,
        key: InstanceKey,
        state: InstanceState,
        reasons: set[Reason],
        connect_error: BaseException | None,
    ) -> tuple[float, Reason, bool]:
        """One blocking pass (in a worker thread); returns when and why to pass again.

        The third value asks the caller to open a connection (outside this thread).
        """
        body = self._runtime.instances.get(key)
        if body is None:
            return MAX_BACKOFF_SECONDS, Reason.RETRY, False
        try:
            bls = parse(body)
        except SpecError:
            return MAX_BACKOFF_SECONDS, Reason.RETRY, False
        poll = self._runtime.config.ban_poll_interval
        try:
            if not state.loaded:
                state.sync.load(bls)
                state.sync.ensure_exists(bls)
                state.loaded = True
            if Reason.DRIFT in reasons:
                # Restore an edited or deleted shard, even while the database is away.
                state.sync.rewrite(bls)
            if state.connection is not None and (
                Reason.BROKEN in reasons or state.connection.closed
            ):
                state.connection.close()
                state.connection = None
            if connect_error is not None:
                raise connect_error
            if state.connection is None:
                if time.monotonic() < state.retry_at and not reasons & CONNECT_NOW:
                    return state.retry_at - time.monotonic(), Reason.RETRY, False
                # The attempt wakes this instance when it ends; the timer is a fallback.
                return MAX_BACKOFF_SECONDS, Reason.RETRY, True
            if not state.ever_connected:
                self._logger.info(f"Ban sync of {bls.namespace}/{bls.name} connected")
                state.ever_connected = True
            rescan = (
                time.monotonic() - state.rescanned_at >= self._runtime.config.ban_rescan_interval
            )
            if rescan:
                report = state.sync.rescan(bls, state.connection)
                state.rescanned_at = time.monotonic()
            else:
                report = state.sync.sync(bls, state.connection)
            address = state.connection.info
            database = (
                True,
                "Connected",
                f"connected to {address.host}:{address.port}/{address.dbname}",
            )
            report_status(self._runtime, bls, body, database, _synced(report), report.count)
            state.backoff, state.last_error = 1.0, None
            return poll, Reason.POLL, False
        except (
            DatabaseUnavailableError,
            psycopg2.Error,
            OSError,
            ApiError,
            urllib3.exceptions.HTTPError,  # the API server unreachable (restarting)
        ) as error:
            return (*self._failed(bls, body, state, error), False)

    def _failed(
        self,
        bls: BlacklistService,
        body: Mapping[str, Any],
        state: InstanceState,
        error: BaseException,
    ) -> tuple[float, Reason]:
        if state.connection is not None:
            # Closed from the worker thread: the loop re-adds no reader for a missing connection.
            state.connection.close()
            state.connection = None
        message = _one_line(error)
        if state.ever_connected:
            delay, limit = state.backoff, MAX_BACKOFF_SECONDS
        else:
            # A database never reached is most likely still starting, or not reachable
            # from here at all: hundreds of those must not keep the operator busy.
            delay, limit = (
                max(state.backoff, FIRST_BACKOFF_NEVER_CONNECTED_SECONDS),
                (MAX_BACKOFF_NEVER_CONNECTED_SECONDS),
            )
        state.backoff = min(delay * 2, limit)
        state.retry_at = time.monotonic() + delay
        # One line per new reason, not one per retry.
        log = self._logger.warning if message != state.last_error else self._logger.debug
        state.last_error = message
        log(f"Ban sync of {bls.namespace}/{bls.name} paused: {message}; retrying in {delay:.0f} s")
        count = len(state.sync.banlist)
        try:
            report_status(
                self._runtime,
                bls,
                body,
                (False, "Unreachable", message),
                (
                    False,
                    "DatabaseUnreachable",
                    f"keeping the last synced list of {count} addresses",
                ),
                count,
            )
        except (ApiError, OSError) as status_error:
            self._logger.warning(f"Could not report the ban sync status: {status_error}")
        return delay, Reason.RETRY
