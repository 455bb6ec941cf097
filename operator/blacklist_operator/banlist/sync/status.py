"""The ban sync's part of an instance's status: DatabaseReady, BanListSynced and bannedCount."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blacklist_operator.banlist.sync.mirror import SyncReport
from blacklist_operator.builders.status import (
    BANLIST_SYNCED,
    DATABASE_READY,
    build_condition,
    condition_changed,
    find_condition,
    merge_condition,
    now,
)
from blacklist_operator.model.resource import BlacklistService
from blacklist_operator.runtime.state import Runtime

# A second field manager, so the ban sync's status fields and the reconcile's
# (Ready, observedGeneration) never remove each other under server-side apply.
STATUS_MANAGER = "blacklist-operator-banlist"

# (status, reason, message) of one condition.
ConditionState = tuple[bool, str, str]


def report_status(
    runtime: Runtime,
    resource: BlacklistService,
    body: Mapping[str, Any],
    database: ConditionState,
    synced: ConditionState,
    count: int,
) -> bool:
    """Apply DatabaseReady, BanListSynced and bannedCount if any of them changed; whether so."""
    status = body.get("status") or {}
    current = status.get("conditions")
    at = now()
    conditions = [
        merge_condition(
            current, build_condition(DATABASE_READY, *database, resource.generation, at)
        ),
        merge_condition(current, build_condition(BANLIST_SYNCED, *synced, resource.generation, at)),
    ]
    if status.get("bannedCount") == count and not any(
        condition_changed(current, condition) for condition in conditions
    ):
        return False
    fields = {"bannedCount": count, "conditions": conditions}
    runtime.api.apply_status(resource.namespace, resource.name, fields, STATUS_MANAGER)
    return True


def states_unchanged(
    body: Mapping[str, Any], database: ConditionState, synced: ConditionState
) -> bool:
    """Whether both conditions keep their status and reason (only counts in messages move)."""
    current = (body.get("status") or {}).get("conditions")
    for kind, (state, reason, _) in ((DATABASE_READY, database), (BANLIST_SYNCED, synced)):
        found = find_condition(current, kind) or {}
        if found.get("status") != ("True" if state else "False") or found.get("reason") != reason:
            return False
    return True


def one_line(error: BaseException) -> str:
    """An error as one line of at most 300 characters, for a condition message and the log."""
    return " ".join(str(error).split())[:300] or type(error).__name__


def connected(connection: Any) -> ConditionState:
    """DatabaseReady of an open connection: where it is connected to."""
    address = connection.info
    return True, "Connected", f"connected to {address.host}:{address.port}/{address.dbname}"


def unreachable(message: str, reason: str = "Unreachable") -> ConditionState:
    """DatabaseReady while the database cannot be reached (or, for an external one, found)."""
    return False, reason, message


def synced(report: SyncReport) -> ConditionState:
    """BanListSynced after a pass that read the ledger."""
    if report.evicted:
        return (
            False,
            "BanListFull",
            f"the ban list holds its limit of {report.capacity} entries (--max-bans): "
            f"{report.evicted} of the oldest bans were evicted to keep the newest",
        )
    if not report.table_exists:
        return True, "LedgerNotCreated", "the ledger table does not exist yet; nothing is banned"
    return True, "Synced", f"{report.count} entries, ledger read up to row {report.cursor}"


def database_as_reported(body: Mapping[str, Any]) -> ConditionState:
    """DatabaseReady as the status has it (a pass that stopped before the database)."""
    found = find_condition((body.get("status") or {}).get("conditions"), DATABASE_READY)
    if found is None:
        return False, "NotConnected", "the ban sync has not connected to the database yet"
    return found.get("status") == "True", str(found.get("reason")), str(found.get("message"))


def conflict(message: str) -> ConditionState:
    """BanListSynced while a ConfigMap of the list's names is someone else's."""
    return False, "ChildConflict", message


def kept(count: int) -> ConditionState:
    """BanListSynced while the database is away: the last synced list stays."""
    return False, "DatabaseUnreachable", f"keeping the last synced list of {count} addresses"
