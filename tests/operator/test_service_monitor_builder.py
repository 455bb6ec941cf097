"""The ServiceMonitor of ``spec.metrics.serviceMonitor``: its builder, and its CRD's discovery.

No cluster: the reconcile's choice with and without the Prometheus Operator's
CRD is checked against a stand-in for API discovery.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from blacklist_operator.apply import KubernetesApi
from blacklist_operator.builders import absent_children, build_children, build_service
from blacklist_operator.builders.monitoring import build_service_monitor
from blacklist_operator.model import BlacklistService, parse
from blacklist_operator.outcome import Outcome
from blacklist_operator.reconcile import served_children


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


def test_service_monitor_scrapes_the_services_http_port() -> None:
    bls = make(port=8080, metrics={"serviceMonitor": True})
    monitor = build_service_monitor(bls)
    assert monitor is not None
    assert (monitor["apiVersion"], monitor["kind"]) == (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
    )
    metadata = monitor["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("demo", "team")
    (owner,) = metadata["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("BlacklistService", "uid-1", True)
    service = build_service(bls)
    # The same labels as every other child, and a selector that picks Service N.
    assert metadata["labels"] == service["metadata"]["labels"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics"}
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_service_monitor_is_an_optional_child_applied_last() -> None:
    bls = make(metrics={"serviceMonitor": True})
    children = build_children(bls)
    assert children[-1]["kind"] == "ServiceMonitor"
    assert all(kind != "ServiceMonitor" for _, kind, _ in absent_children(bls))


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
