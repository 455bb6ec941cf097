"""One ban-sync pass of one instance (blocking, in a worker thread), and when to pass again.

A pass loads the instance's ban list the first time (and makes sure
``N-banlist`` exists), rewrites the whole list after one of its ConfigMaps was
edited, then reads
the ledger over the instance's connection: incrementally, or as a full rescan
every ``--ban-rescan-interval`` seconds, so addresses whose ledger rows were
deleted leave the list. Without a connection it asks the supervisor to open
one; when the database cannot be reached it keeps the last synced list,
reports ``DatabaseReady=False`` and backs off. When a ConfigMap of the list's
names is someone else's it writes nothing, reports ``BanListSynced=False``
(reason ``ChildConflict``, naming it) with a Warning Event, and looks again
every ``CONFLICT_RETRY_SECONDS``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
import psycopg2
import urllib3

from blacklist_operator import metrics
from blacklist_operator.banlist.sync import status
from blacklist_operator.banlist.sync.connections import (
    MAX_BACKOFF_SECONDS,
    SECRET_RETRY_SECONDS,
    DatabaseLink,
    DatabaseSecretInvalidError,
    DatabaseUnavailableError,
    public_message,
)
from blacklist_operator.banlist.sync.mirror import LOCK_RETRY_SECONDS, BanListSync, SyncReport
from blacklist_operator.banlist.sync.store import BanListConflictError
from blacklist_operator.kube.api import ApiError
from blacklist_operator.model.external import secret_checksum
from blacklist_operator.model.resource import BlacklistService, SpecError, parse
from blacklist_operator.runtime.state import Logger, Runtime
from blacklist_operator.runtime.workqueue import InstanceKey, Reason

# bannedCount alone (conditions unchanged) is written at most this often.
STATUS_PACE_SECONDS = 1.0
# How often a connected pass looks whether an external database's Secret was edited.
SECRET_CHECK_SECONDS = 30.0
# A list held back by someone else's ConfigMap looks again this often: that object
# carries none of our labels, so no watch tells of its removal.
CONFLICT_RETRY_SECONDS = 30.0
# What a pass survives: it reports the database unreachable and retries later.
PASS_FAILURES = (
    DatabaseUnavailableError,
    psycopg2.Error,
    OSError,
    ApiError,
    urllib3.exceptions.HTTPError,  # the API server unreachable (restarting)
)


@dataclass(frozen=True)
class Next:
    """When and why the instance's next pass runs, and whether to open a connection first."""

    delay: float
    reason: Reason
    # Open a connection (in the connect threads; the attempt wakes the instance when it ends).
    connect: bool = False


@dataclass
class InstanceState:
    """What the ban sync keeps of one instance between passes."""

    sync: BanListSync
    link: DatabaseLink
    loaded: bool = False
    # monotonic time of the last full rescan of the ledger.
    rescanned_at: float = field(default_factory=time.monotonic)
    # monotonic time of the last look at an external database's Secret.
    secret_checked_at: float = field(default_factory=time.monotonic)
    # monotonic time of the last status write.
    status_at: float = 0.0
    # The conflict last reported (its Event is posted once), None while there is none.
    conflict: str | None = None


def run_pass(
    runtime: Runtime,
    logger: Logger,
    key: InstanceKey,
    state: InstanceState,
    reasons: set[Reason],
    connect_error: BaseException | None,
) -> Next:
    """One blocking pass over the instance ``key``, woken for ``reasons``."""
    body = runtime.instances.get(key)
    if body is None:
        return Next(MAX_BACKOFF_SECONDS, Reason.RETRY)
    try:
        resource = parse(body)
    except SpecError:
        return Next(MAX_BACKOFF_SECONDS, Reason.RETRY)
    link = state.link
    try:
        if not state.loaded:
            state.sync.load(resource)
            state.sync.ensure_exists(resource)
            state.loaded = True
        if Reason.DRIFT in reasons:
            # Restore an edited or deleted ConfigMap, even while the database is away.
            state.sync.rewrite(resource)
            _log_compactions(logger, resource, state)
        if link.connection is not None and (Reason.BROKEN in reasons or link.connection.closed):
            link.drop()
        if connect_error is not None:
            raise connect_error
        if link.connection is None:
            wait = link.wait_before_connecting(reasons)
            if wait > 0:
                return Next(wait, Reason.RETRY)
            # The attempt wakes this instance when it ends; the timer is a fallback.
            return Next(MAX_BACKOFF_SECONDS, Reason.RETRY, connect=True)
        if not link.ever_connected:
            logger.info(f"Ban sync of {resource.namespace}/{resource.name} connected")
            link.ever_connected = True
        report = _read_ledger(runtime, resource, state)
        _log_compactions(logger, resource, state)
        _check_external_secret(runtime, resource, state)
        database = status.connected(link.connection)
        status_in = _report_status(runtime, resource, body, state, database, report)
        link.succeeded()
        if state.conflict is not None:
            logger.info(
                f"Ban sync of {resource.namespace}/{resource.name} resumed: the conflict is gone"
            )
            state.conflict = None
        metrics.ban_list_synced(key, report.count, report.rows_behind, report.oldest_new_row_ms)
        metrics.ban_list_limited(key, report.capacity, report.evicted_now)
        delay = runtime.config.ban_poll_interval
        if report.behind:
            # An insert was held open: read exactly again as soon as the lock may be free,
            # so a row it commits with a low id is not left to the next poll.
            delay = min(delay, LOCK_RETRY_SECONDS)
        if report.write_in is not None:
            # Bans held back to coalesce head writes under load go out then.
            delay = min(delay, report.write_in)
        if status_in is not None:
            delay = min(delay, status_in)
        return Next(delay, Reason.POLL)
    except BanListConflictError as error:
        return _conflicted(runtime, logger, resource, body, state, error)
    except PASS_FAILURES as error:
        return _failed(runtime, logger, resource, body, state, error)


def _conflicted(
    runtime: Runtime,
    logger: Logger,
    resource: BlacklistService,
    body: Mapping[str, Any],
    state: InstanceState,
    error: BanListConflictError,
) -> Next:
    """Report a ConfigMap of the list's names that is someone else's; look again later.

    The list in memory is kept (and the ledger not read meanwhile): once the
    object is gone, the next pass writes it whole.
    """
    message = str(error)
    if state.conflict != message:
        logger.warning(f"Ban sync of {resource.namespace}/{resource.name} held back: {message}")
        kopf.warn(cast("kopf.Body", body), reason="ChildConflict", message=message[:1000])
        state.conflict = message
    count = len(state.sync.banlist)
    try:
        status.report_status(
            runtime,
            resource,
            body,
            status.database_as_reported(body),
            status.conflict(message),
            count,
        )
    except PASS_FAILURES as status_error:
        logger.warning(f"Could not report the ban sync status: {status_error}")
    return Next(CONFLICT_RETRY_SECONDS, Reason.RETRY)


def _report_status(
    runtime: Runtime,
    resource: BlacklistService,
    body: Mapping[str, Any],
    state: InstanceState,
    database: status.ConditionState,
    report: SyncReport,
) -> float | None:
    """Write the status; when only counts moved, at most every ``STATUS_PACE_SECONDS``.

    Under a flood every pass changes the count: a status write each time would
    cost etcd (and every watcher of the resource) more than the bans. Returns
    the seconds until a held-back count is due.
    """
    synced = status.synced(report)
    now = time.monotonic()
    wait = state.status_at + STATUS_PACE_SECONDS - now
    if wait > 0 and status.states_unchanged(body, database, synced):
        return wait  # That pass writes whatever changed by then.
    if status.report_status(runtime, resource, body, database, synced, report.count):
        state.status_at = now
    return None


def _log_compactions(logger: Logger, resource: BlacklistService, state: InstanceState) -> None:
    """One line per compaction: each rewrites the whole snapshot, megabytes at scale."""
    for compaction in state.sync.compactions:
        logger.info(
            f"Compacted the ban list of {resource.namespace}/{resource.name} ({compaction})"
        )
    state.sync.compactions.clear()


def _check_external_secret(
    runtime: Runtime, resource: BlacklistService, state: InstanceState
) -> None:
    """Every ``SECRET_CHECK_SECONDS``, reconcile again if an external database's Secret changed.

    Secrets are not watched; this read by name is what rolls the service pods onto an
    edited Secret within a minute instead of at the next resync.
    """
    if resource.spec.database.external is None:
        return
    if time.monotonic() - state.secret_checked_at < SECRET_CHECK_SECONDS:
        return
    state.secret_checked_at = time.monotonic()
    secret = runtime.api.get(
        "v1", "Secret", resource.namespace, resource.spec.database.external.secret_name
    )
    applied = runtime.external_databases.get((resource.namespace, resource.name))
    checksum = secret_checksum((secret or {}).get("data") or {}) if secret is not None else None
    if applied is not None and applied.checksum != checksum:
        runtime.reconcile_later((resource.namespace, resource.name), 0.0)


def _read_ledger(runtime: Runtime, resource: BlacklistService, state: InstanceState) -> SyncReport:
    """Sync past the cursors, or rescan the whole ledger when the rescan interval has passed."""
    connection = state.link.connection
    if time.monotonic() - state.rescanned_at >= runtime.config.ban_rescan_interval:
        report = state.sync.rescan(resource, connection)
        state.rescanned_at = time.monotonic()
        return report
    return state.sync.sync(resource, connection)


def _failed(
    runtime: Runtime,
    logger: Logger,
    resource: BlacklistService,
    body: Mapping[str, Any],
    state: InstanceState,
    error: BaseException,
) -> Next:
    """Close the connection, back off, and report the database unreachable."""
    link = state.link
    link.drop()
    message = status.one_line(error)
    invalid = isinstance(error, DatabaseSecretInvalidError)
    delay = link.back_off()
    if invalid:
        delay = link.retry_in(SECRET_RETRY_SECONDS)
    # One line per new reason, not one per retry.
    log = logger.warning if link.new_error(message) else logger.debug
    log(
        f"Ban sync of {resource.namespace}/{resource.name} paused: {message}; "
        f"retrying in {delay:.0f} s"
    )
    count = len(state.sync.banlist)
    reason = "DatabaseSecretInvalid" if invalid else "Unreachable"
    # The log has the whole message; the status, readable by the tenant, a generic one.
    database = status.unreachable(public_message(error), reason)
    metrics.ban_sync_failed((resource.namespace, resource.name), count)
    try:
        status.report_status(runtime, resource, body, database, status.kept(count), count)
    except (ApiError, OSError) as status_error:
        logger.warning(f"Could not report the ban sync status: {status_error}")
    return Next(delay, Reason.RETRY)
