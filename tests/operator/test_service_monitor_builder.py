"""The ServiceMonitor of ``spec.metrics.serviceMonitor``: its builder, and its CRD's discovery.

No cluster: the reconcile's choice with and without the Prometheus Operator's
CRD is checked against a stand-in for API discovery.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from blacklist_operator.builders import (
    absent_children,
    build_children,
    build_service,
    build_service_deployment,
)
from blacklist_operator.builders.monitoring import build_metrics_service, build_service_monitor
from blacklist_operator.kube.api import KubernetesApi
from blacklist_operator.model.resource import BlacklistService, parse
from blacklist_operator.reconcile.children import served_children
from blacklist_operator.reconcile.outcome import Outcome


def make(**spec: Any) -> BlacklistService:
    return parse(
        {
            "metadata": {"name": "demo", "namespace": "team", "uid": "uid-1", "generation": 1},
            "spec": spec,
        }
    )


def test_no_service_monitor_unless_asked_for() -> None:
    for bls in (make(), make(metrics={}), make(metrics={"serviceMonitor": False})):
        assert build_service_monitor(bls) is None
        assert "ServiceMonitor" not in {child["kind"] for child in build_children(bls)}
        assert ("monitoring.coreos.com/v1", "ServiceMonitor", "demo") in absent_children(bls)
        assert ("v1", "Service", "demo-metrics") in absent_children(bls)


def test_service_monitor_scrapes_the_pods_metrics_port_through_service_n_metrics() -> None:
    bls = make(port=8080, metrics={"serviceMonitor": True})
    monitor = build_service_monitor(bls)
    metrics_service = build_metrics_service(bls)
    assert monitor is not None
    assert metrics_service is not None
    assert (monitor["apiVersion"], monitor["kind"]) == (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
    )
    metadata = monitor["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("demo", "team")
    (owner,) = metadata["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("BlacklistService", "uid-1", True)
    # It selects Service demo-metrics by its labels, and not Service demo.
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics_service["metadata"]["labels"].items()
    assert not selector.items() <= build_service(bls)["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    # The series' service label stays N (the instance label of N-metrics), as the dashboard needs.
    (relabeling,) = endpoint["relabelings"]
    assert relabeling["targetLabel"] == "service"
    assert relabeling["sourceLabels"] == [
        "__meta_kubernetes_service_label_app_kubernetes_io_instance"
    ]
    assert metrics_service["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
    # demo-metrics: headless, the metrics port alone, in front of the service pods.
    spec = metrics_service["spec"]
    assert metrics_service["metadata"]["name"] == "demo-metrics"
    assert (spec["type"], spec["clusterIP"]) == ("ClusterIP", "None")
    assert spec["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    deployment = build_service_deployment(bls)
    assert spec["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]


def test_service_n_never_exposes_the_metrics_port() -> None:
    for bls in (
        make(),
        make(metrics={"serviceMonitor": True}),
        make(service={"type": "ClusterIP"}),
    ):
        (port,) = build_service(bls)["spec"]["ports"]
        assert (port["name"], port["targetPort"]) == ("http", "http")
    (container,) = build_service_deployment(make())["spec"]["template"]["spec"]["containers"]
    environment = {item["name"]: item.get("value") for item in container["env"]}
    assert environment["METRICS_PORT"] == "9090"
    assert environment["PORT"] == "5004"


def test_service_monitor_is_an_optional_child_applied_last() -> None:
    bls = make(metrics={"serviceMonitor": True})
    children = build_children(bls)
    assert children[-1]["kind"] == "ServiceMonitor"
    assert all(kind != "ServiceMonitor" for _, kind, _ in absent_children(bls))
    assert ("Service", "demo-metrics") in {(c["kind"], c["metadata"]["name"]) for c in children}


class Discovery:
    """Stands in for the API's discovery: which (apiVersion, kind) it serves."""

    def __init__(self, *served: tuple[str, str]) -> None:
        self.served = set(served)

    def serves(self, api_version: str, kind: str) -> bool:
        return (api_version, kind) in self.served


def test_without_the_crd_the_service_monitor_is_a_warning_not_a_failure() -> None:
    children = build_children(make(metrics={"serviceMonitor": True}))
    outcome = Outcome()
    served = served_children(
        cast(KubernetesApi, Discovery()), children, logging.getLogger("test"), outcome
    )
    assert [child["kind"] for child in served] == [child["kind"] for child in children[:-1]]
    assert outcome.failures == []
    ((reason, message),) = outcome.warnings
    assert reason == "ServiceMonitorUnavailable"
    assert "ServiceMonitor demo was not created" in message
    assert "monitoring.coreos.com/v1" in message


def test_with_the_crd_the_service_monitor_is_applied() -> None:
    children = build_children(make(metrics={"serviceMonitor": True}))
    outcome = Outcome()
    discovery = Discovery(("monitoring.coreos.com/v1", "ServiceMonitor"))
    served = served_children(
        cast(KubernetesApi, discovery), children, logging.getLogger("test"), outcome
    )
    assert served == children
    assert outcome.warnings == []
