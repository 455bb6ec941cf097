"""Availability of the service pods: their PodDisruptionBudget and HorizontalPodAutoscaler.

Also the server-side apply hand-over of the Deployment's ``spec.replicas`` to
the autoscaler: while ``spec.autoscaling`` is set the operator's applied
Deployment leaves ``replicas`` out, and the field must not vanish with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blacklist_operator.builders.naming import (
    COMPONENT_SERVICE,
    metadata,
    selector_labels,
    service_name,
)
from blacklist_operator.model.resource import BlacklistService


def wants_disruption_budget(resource: BlacklistService) -> bool:
    """A budget protects more than one replica: with one, it would only block drains."""
    return resource.spec.replicas > 1 or resource.spec.autoscaling is not None


def build_pod_disruption_budget(resource: BlacklistService) -> dict[str, Any] | None:
    """The PodDisruptionBudget ``N`` of the service pods, or None when it is not wanted."""
    if not wants_disruption_budget(resource):
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(resource, service_name(resource), COMPONENT_SERVICE),
        "spec": {
            "maxUnavailable": resource.spec.disruption.max_unavailable,
            "selector": {"matchLabels": selector_labels(resource, COMPONENT_SERVICE)},
            # A pod that is not ready serves nothing: a drain may always evict it, or
            # a crash-looping pod would block every node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def build_horizontal_pod_autoscaler(resource: BlacklistService) -> dict[str, Any] | None:
    """The HorizontalPodAutoscaler ``N`` of Deployment ``N``, or None without autoscaling."""
    autoscaling = resource.spec.autoscaling
    if autoscaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(resource, service_name(resource), COMPONENT_SERVICE),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": service_name(resource),
            },
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": autoscaling.target_cpu_percent,
                        },
                    },
                }
            ],
        },
    }


def applies_replicas(deployment: Mapping[str, Any], manager: str) -> bool:
    """Whether ``manager``'s server-side apply owns the Deployment's ``spec.replicas``."""
    for entry in (deployment.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:replicas" in spec:
            return True
    return False


def build_replicas_hand_over(resource: BlacklistService, replicas: int) -> dict[str, Any]:
    """An apply of only ``spec.replicas`` at its current value, under a second field manager.

    When the last owner of a field drops it from its applied configuration, the
    API server removes the field: the Deployment would fall back to the default
    of 1 replica until the autoscaler raises it again. Applied first under
    another manager, the field keeps an owner (until the autoscaler's first
    write through the scale subresource takes it over) and its value.
    """
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": service_name(resource), "namespace": resource.namespace},
        "spec": {"replicas": replicas},
    }
