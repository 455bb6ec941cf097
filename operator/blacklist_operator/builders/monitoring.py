"""How Prometheus scrapes the service: Service N-metrics and the optional ServiceMonitor.

The service serves ``/metrics`` on its own port (``METRICS_PORT``, 9090), which
Service ``N`` does not expose: the NodePort and an Ingress carry only the
service's port, so nobody outside the cluster reads the metrics (or loads a
replica with scrapes). With ``spec.metrics.serviceMonitor`` the operator creates a
headless ClusterIP Service ``N-metrics`` that exposes the metrics port alone, and
a ServiceMonitor ``N`` that selects it. A Service rather than a PodMonitor: the
ServiceMonitor is what the field has always created, Prometheus set-ups that
select ServiceMonitors keep working, and the endpoints of a headless Service are
the pods themselves, with no virtual IP in the way.

The ServiceMonitor kind belongs to the Prometheus Operator's CRD, which a cluster
may not have: the builder only says what is wanted, the reconcile applies it when
the API serves :data:`SERVICE_MONITOR_API_VERSION` ``servicemonitors``.
"""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders.naming import (
    COMPONENT_METRICS,
    COMPONENT_SERVICE,
    metadata,
    metrics_service_name,
    selector_labels,
    service_name,
)
from blacklist_operator.model.resource import METRICS_PORT, BlacklistService

SERVICE_MONITOR_API_VERSION = "monitoring.coreos.com/v1"
SERVICE_MONITOR_PLURAL = "servicemonitors"
# The service container's port that serves /metrics (the service's METRICS_PORT), by name.
METRICS_PORT_NAME = "metrics"
METRICS_PATH = "/metrics"
# Prometheus's discovery label of the Service's app.kubernetes.io/instance label (N).
INSTANCE_SOURCE_LABEL = "__meta_kubernetes_service_label_app_kubernetes_io_instance"


def build_metrics_service(resource: BlacklistService) -> dict[str, Any] | None:
    """Headless Service ``N-metrics`` of the pods' metrics port; only with the ServiceMonitor."""
    if not resource.spec.metrics.service_monitor:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(resource, metrics_service_name(resource), COMPONENT_METRICS),
        "spec": {
            "type": "ClusterIP",
            # Prometheus scrapes each pod (the endpoints), never a load-balanced address.
            "clusterIP": "None",
            "selector": selector_labels(resource, COMPONENT_SERVICE),
            "ports": [
                {
                    "name": METRICS_PORT_NAME,
                    "port": METRICS_PORT,
                    "targetPort": METRICS_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_service_monitor(resource: BlacklistService) -> dict[str, Any] | None:
    """The ServiceMonitor ``N`` of Service ``N-metrics``, or None without the field.

    It selects that Service by its labels (name, instance, component ``metrics``), in
    the resource's namespace only, and scrapes every endpoint's ``metrics`` port.
    """
    if not resource.spec.metrics.service_monitor:
        return None
    return {
        "apiVersion": SERVICE_MONITOR_API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": metadata(resource, service_name(resource), COMPONENT_SERVICE),
        "spec": {
            "selector": {"matchLabels": selector_labels(resource, COMPONENT_METRICS)},
            "namespaceSelector": {"matchNames": [resource.namespace]},
            "endpoints": [
                {
                    "port": METRICS_PORT_NAME,
                    "path": METRICS_PATH,
                    # The series keep service="N", as when Service N was scraped: the
                    # dashboard matches it against the operator's name label.
                    "relabelings": [
                        {
                            "action": "replace",
                            "sourceLabels": [INSTANCE_SOURCE_LABEL],
                            "targetLabel": "service",
                        }
                    ],
                }
            ],
        },
    }
