"""The ban-sync loop of one BlacklistService: LISTEN for new ledger rows, poll as a fallback.

The service runs ``NOTIFY denied_access_ledger`` after each insert, so a new ban
reaches the ConfigMaps within a database round trip and one apply; a bounded
poll (``--ban-poll-interval``) catches anything a lost notification missed.
While the database is unreachable the loop reports ``DatabaseReady=False``,
keeps the last synced list and retries with back-off; it never crashes.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping
from typing import Any

import kopf
import psycopg2

from blacklist_operator.apply import ApiError
from blacklist_operator.banlist import ledger
from blacklist_operator.banlist.sync import BanListSync, SyncReport
from blacklist_operator.builders.database import database_host
from blacklist_operator.builders.naming import POSTGRES_PORT, database_settings_name
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

# A second field manager, so the ban sync's status fields and the reconcile's
# (Ready, observedGeneration) never remove each other under server-side apply.
STATUS_MANAGER = "blacklist-operator-banlist"
# Notifications that arrive together are synced together.
COALESCE_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 30.0


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


class StatusReporter:
    """Writes DatabaseReady, BanListSynced and bannedCount, only when they change."""

    def __init__(self, runtime: Runtime, body: Callable[[], Mapping[str, Any]]) -> None:
        self._runtime = runtime
        self._body = body

    def report(
        self,
        bls: BlacklistService,
        database: tuple[bool, str, str],
        synced: tuple[bool, str, str],
        count: int,
    ) -> None:
        """Apply the two conditions and the count if any of them changed."""
        status = self._body().get("status") or {}
        current = status.get("conditions")
        at = now()
        conditions = [
            merge_condition(
                current, build_condition(DATABASE_READY, *database, bls.generation, at)
            ),
            merge_condition(current, build_condition(BANLIST_SYNCED, *synced, bls.generation, at)),
        ]
        if status.get("bannedCount") == count and not any(
            condition_changed(current, condition) for condition in conditions
        ):
            return
        fields = {"bannedCount": count, "conditions": conditions}
        self._runtime.api.apply_status(bls.namespace, bls.name, fields, STATUS_MANAGER)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def _synced(report: SyncReport) -> tuple[bool, str, str]:
    if report.overflow:
        return (
            False,
            "BanListFull",
            f"{report.overflow} addresses left out: the ban list is limited to 16 ConfigMaps",
        )
    if not report.table_exists:
        return True, "LedgerNotCreated", "the ledger table does not exist yet; nothing is banned"
    return True, "Synced", f"{report.count} addresses, ledger read up to row {report.cursor}"


async def run_ban_sync(
    runtime: Runtime,
    body: Callable[[], Mapping[str, Any]],
    stopped: kopf.DaemonStopped,
    logger: Logger,
) -> None:
    """Keep the ban list of the BlacklistService ``body()`` in sync until ``stopped``."""
    metadata = body().get("metadata") or {}
    key = (str(metadata.get("namespace")), str(metadata.get("name")))
    sync = BanListSync(runtime.api, runtime.written_shards)
    reporter = StatusReporter(runtime, body)
    runtime.banlists.register(key)
    backoff = 1.0
    loaded = False
    try:
        while not stopped:
            try:
                bls = parse(body())
                if not loaded:
                    await asyncio.to_thread(sync.load, bls)
                    await asyncio.to_thread(sync.ensure_exists, bls)
                    loaded = True
                await _connected_cycle(runtime, body, sync, reporter, key, stopped, logger)
                backoff = 1.0
            except SpecError:
                await stopped.wait(MAX_BACKOFF_SECONDS)
            except (DatabaseUnavailableError, psycopg2.Error, OSError, ApiError) as error:
                message = _one_line(error)
                logger.warning(f"Ban sync paused: {message}; retrying in {backoff:.0f} s")
                try:
                    bls = parse(body())
                    count = len(sync.banlist)
                    await asyncio.to_thread(
                        reporter.report,
                        bls,
                        (False, "Unreachable", message),
                        (
                            False,
                            "DatabaseUnreachable",
                            f"keeping the last synced list of {count} addresses",
                        ),
                        count,
                    )
                except (ApiError, SpecError, OSError) as status_error:
                    logger.warning(f"Could not report the ban sync status: {status_error}")
                if "drift" in await _wait(runtime, key, stopped, backoff) and loaded:
                    # Restore an edited or deleted shard even while the database is away.
                    await asyncio.to_thread(sync.rewrite, parse(body()))
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
    finally:
        runtime.banlists.unregister(key)


async def _connected_cycle(
    runtime: Runtime,
    body: Callable[[], Mapping[str, Any]],
    sync: BanListSync,
    reporter: StatusReporter,
    key: tuple[str, str],
    stopped: kopf.DaemonStopped,
    logger: Logger,
) -> None:
    """Connect, LISTEN, and sync on every notification or poll until something breaks."""
    address = await asyncio.to_thread(database_address, runtime, parse(body()))
    queries = await asyncio.to_thread(ledger.connect, address)
    listener = await asyncio.to_thread(ledger.connect, address)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.to_thread(ledger.listen, listener)

        def on_readable() -> None:
            try:
                if ledger.drain_notifications(listener):
                    runtime.banlists.wake(key, "ledger")
            except psycopg2.Error:
                loop.remove_reader(listener.fileno())
                runtime.banlists.wake(key, "broken")

        loop.add_reader(listener.fileno(), on_readable)
        database = (
            True,
            "Connected",
            f"connected to {address.host}:{address.port}/{address.database}",
        )
        logger.info(f"Ban sync connected to {address.host}:{address.port}")
        reasons: set[str] = set()
        while not stopped:
            bls = parse(body())
            if "drift" in reasons:
                await asyncio.to_thread(sync.rewrite, bls)
            report = await asyncio.to_thread(sync.sync, bls, queries)
            await asyncio.to_thread(reporter.report, bls, database, _synced(report), report.count)
            reasons = await _wait(runtime, key, stopped, runtime.config.ban_poll_interval)
            if "broken" in reasons:
                raise DatabaseUnavailableError("the LISTEN connection to the database broke")
            await asyncio.sleep(COALESCE_SECONDS)
    finally:
        if not listener.closed:
            loop.remove_reader(listener.fileno())
        listener.close()
        queries.close()


async def _wait(
    runtime: Runtime, key: tuple[str, str], stopped: kopf.DaemonStopped, timeout: float
) -> set[str]:
    """Wake-up reasons within ``timeout``, checking ``stopped`` every second."""
    remaining = timeout
    while remaining > 0 and not stopped:
        reasons = await runtime.banlists.wait(key, min(1.0, remaining))
        if reasons:
            return reasons
        remaining -= 1.0
    return set()
