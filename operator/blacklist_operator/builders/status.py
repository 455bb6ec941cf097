"""The operator's part of a BlacklistService's status, as pure values.

Conditions by Kubernetes convention: a condition keeps its ``lastTransitionTime``
while its status stays the same, so that readers can tell how long a state has
held. Beside them, what ``kubectl get`` and the ``scale`` subresource read: the
service's replica counts, its pod selector, its NodePort and its image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from blacklist_operator.builders.naming import COMPONENT_SERVICE, selector_labels
from blacklist_operator.model.resource import BlacklistService

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


def service_selector(resource: BlacklistService) -> str:
    """The service pods' label selector as text: the ``scale`` subresource's ``status.selector``.

    An autoscaler that targets the resource itself counts the pods it selects.
    """
    return ",".join(
        f"{key}={value}" for key, value in selector_labels(resource, COMPONENT_SERVICE).items()
    )


def build_observed_status(
    resource: BlacklistService,
    ready: dict[str, Any],
    node_port: int | None,
    replicas: int,
    ready_replicas: int,
) -> dict[str, Any]:
    """The status fields the reconcile owns (under server-side apply: all sent, every time).

    ``replicas`` and ``ready_replicas`` are the service Deployment's own counts, so
    ``kubectl get bls`` is true under an autoscaler too. ``nodePort`` is left out
    when the Service has none (type ClusterIP), which removes a stale one.
    """
    fields: dict[str, Any] = {
        "observedGeneration": resource.generation,
        "conditions": [ready],
        "replicas": replicas,
        "readyReplicas": ready_replicas,
        "selector": service_selector(resource),
    }
    if node_port is not None:
        fields["nodePort"] = node_port
    return fields


def status_changed(current: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """Whether applying ``fields`` would change a status field other than the conditions.

    A field we stopped sending (a NodePort gone with the type ClusterIP) is a change too.
    """
    keys = ("observedGeneration", "replicas", "readyReplicas", "selector", "nodePort", "image")
    return any(current.get(key) != fields.get(key) for key in keys)
