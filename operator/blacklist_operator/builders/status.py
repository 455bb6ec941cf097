"""Status conditions by Kubernetes convention, as pure values.

A condition keeps its ``lastTransitionTime`` while its status stays the same, so
that readers can tell how long a state has held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

READY = "Ready"
DATABASE_READY = "DatabaseReady"
BANLIST_SYNCED = "BanListSynced"


def now() -> str:
    """The current time in the format of ``lastTransitionTime`` (RFC 3339, seconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_condition(
    condition_type: str, ok: bool, reason: str, message: str, generation: int, at: str
) -> dict[str, Any]:
    """One condition; ``at`` is the transition time if the status changes."""
    return {
        "type": condition_type,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": at,
    }


def find_condition(
    conditions: Sequence[Mapping[str, Any]] | None, condition_type: str
) -> Mapping[str, Any] | None:
    """The condition of ``condition_type`` among ``conditions``, if any."""
    for condition in conditions or ():
        if condition.get("type") == condition_type:
            return condition
    return None


def merge_condition(
    current: Sequence[Mapping[str, Any]] | None, new: dict[str, Any]
) -> dict[str, Any]:
    """``new``, keeping the current ``lastTransitionTime`` when the status did not change."""
    previous = find_condition(current, new["type"])
    if previous is not None and previous.get("status") == new["status"]:
        return {
            **new,
            "lastTransitionTime": previous.get("lastTransitionTime", new["lastTransitionTime"]),
        }
    return new


def condition_changed(current: Sequence[Mapping[str, Any]] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing ``new`` would change what readers see (ignoring the timestamp)."""
    previous = find_condition(current, new["type"])
    if previous is None:
        return True
    keys = ("status", "reason", "message", "observedGeneration")
    return any(previous.get(key) != new.get(key) for key in keys)
