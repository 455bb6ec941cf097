"""``spec.metrics.serviceMonitor`` on the real control plane, with the real Prometheus Operator CRD.

The CRD is the pinned release's (``service_monitor_crd``), so the API server
validates the ServiceMonitor the operator applies exactly as a cluster with the
Prometheus Operator would.
"""

from __future__ import annotations

import json

import pytest

from blacklist_devtools.kube import Cluster
from blacklist_operator.kube.api import KubernetesApi
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_service_monitor_follows_the_spec(
    service_monitor_crd: Cluster, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster = operator_process.cluster
    apply_manifest(cluster, blacklist_service("demo", namespace, metrics={"serviceMonitor": True}))
    wait_for(
        lambda: get_json(cluster, "servicemonitor", "demo", "-n", namespace) is not None,
        90,
        "ServiceMonitor demo",
        operator_process,
    )
    monitor = get_json(cluster, "servicemonitor", "demo", "-n", namespace) or {}
    service = get_json(cluster, "service", "demo-metrics", "-n", namespace) or {}
    owner = monitor["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("BlacklistService", "demo", True)
    # It selects Service demo-metrics by its labels, and scrapes the port that Service has.
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [namespace]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port.get("name") for port in service["spec"]["ports"]}
    services = get_json(
        cluster,
        "services",
        "-n",
        namespace,
        "-l",
        ",".join(f"{key}={value}" for key, value in selector.items()),
    )
    assert [item["metadata"]["name"] for item in (services or {})["items"]] == ["demo-metrics"]
    # Service demo, the NodePort, does not carry the metrics port.
    public = get_json(cluster, "service", "demo", "-n", namespace) or {}
    assert [port["name"] for port in public["spec"]["ports"]] == ["http"]
    wait_for(
        lambda: (
            condition(get_json(cluster, "bls", "demo", "-n", namespace), "Ready").get("status")
            == "True"
        ),
        180,
        "Ready=True with the ServiceMonitor",
        operator_process,
    )

    cluster.kubectl(
        "patch",
        "bls",
        "demo",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"metrics": {"serviceMonitor": False}}}),
    )
    wait_for(
        lambda: get_json(cluster, "servicemonitor", "demo", "-n", namespace) is None,
        60,
        "the ServiceMonitor to be deleted",
        operator_process,
    )
    wait_for(
        lambda: get_json(cluster, "service", "demo-metrics", "-n", namespace) is None,
        60,
        "Service demo-metrics to be deleted",
        operator_process,
    )
    assert get_json(cluster, "service", "demo", "-n", namespace) is not None


def test_discovery_tells_a_served_kind_from_a_missing_one(service_monitor_crd: Cluster) -> None:
    with service_monitor_crd.api_client() as api_client:
        api = KubernetesApi(api_client)
        assert api.serves("monitoring.coreos.com/v1", "ServiceMonitor")
        assert api.serves("v1", "Service")
        # A group the API does not have answers 404: not served, no error.
        assert not api.serves("monitoring.example.com/v1", "ServiceMonitor")
        assert not api.serves("monitoring.coreos.com/v1alpha9", "ServiceMonitor")
