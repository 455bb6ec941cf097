"""The optional ServiceMonitor through which a Prometheus Operator scrapes the service.

The kind belongs to the Prometheus Operator's CRD, which a cluster may not have:
the builder only says what is wanted, the reconcile applies it when the API
serves :data:`SERVICE_MONITOR_API_VERSION` ``servicemonitors``.
"""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders.naming import (
    COMPONENT_SERVICE,
    metadata,
    selector_labels,
    service_name,
)
from blacklist_operator.model import BlacklistService

SERVICE_MONITOR_API_VERSION = "monitoring.coreos.com/v1"
SERVICE_MONITOR_PLURAL = "servicemonitors"
# The name of the port of Service N (builders.service.build_service) that serves /metrics.
METRICS_PORT_NAME = "http"
METRICS_PATH = "/metrics"


def build_service_monitor(bls: BlacklistService) -> dict[str, Any] | None:
    """The ServiceMonitor ``N`` of Service ``N``, or None without ``spec.metrics.serviceMonitor``.

    It selects the Service by its selector labels (name, instance, component), in
    the resource's namespace only, and scrapes every endpoint's ``http`` port.
    """
    if not bls.spec.metrics.service_monitor:
        return None
    return {
        "apiVersion": SERVICE_MONITOR_API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": metadata(bls, service_name(bls), COMPONENT_SERVICE),
        "spec": {
            "selector": {"matchLabels": selector_labels(bls, COMPONENT_SERVICE)},
            "namespaceSelector": {"matchNames": [bls.namespace]},
            "endpoints": [{"port": METRICS_PORT_NAME, "path": METRICS_PATH}],
        },
    }
