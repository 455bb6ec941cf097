"""kubectl tells the truth: scale through the resource, replica counts from the Deployment."""

from __future__ import annotations

import pytest

from blacklist_devtools import images
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    get_json,
    install_crd,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
SELECTOR = (
    "app.kubernetes.io/name=blacklist-service,app.kubernetes.io/instance=scaled,"
    "app.kubernetes.io/component=service"
)


def status_of(operator: OperatorProcess, namespace: str) -> dict[str, object]:
    body = get_json(operator.cluster, "bls", "scaled", "-n", namespace) or {}
    return dict(body.get("status") or {})


def test_kubectl_scale_moves_the_service_and_status_follows(
    operator_process: OperatorProcess, namespace: str
) -> None:
    cluster = operator_process.cluster
    # The CRD is cluster-wide and shared: make sure this tree's, with the scale subresource, is.
    install_crd(cluster)
    apply_manifest(cluster, blacklist_service("scaled", namespace))

    def counted(replicas: int) -> bool:
        status = status_of(operator_process, namespace)
        return status.get("replicas") == replicas and status.get("readyReplicas") == replicas

    wait_for(lambda: counted(1), 90, "status.readyReplicas 1", operator_process)
    status = status_of(operator_process, namespace)
    assert status["selector"] == SELECTOR
    assert status["image"] == images.reference("service")

    cluster.kubectl("scale", "bls/scaled", "-n", namespace, "--replicas=2")
    wait_for(lambda: counted(2), 90, "status.readyReplicas 2", operator_process)
    deployment = get_json(cluster, "deployment", "scaled", "-n", namespace)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2
    row = cluster.kubectl("get", "bls", "scaled", "-n", namespace, "--no-headers").split()
    assert row[2] == "2"  # REPLICAS, from status
    scale = get_json(cluster, "bls", "scaled", "-n", namespace, "--subresource=scale")
    assert scale is not None
    assert scale["status"] == {"replicas": 2, "selector": SELECTOR}


def test_replicas_reported_are_the_deployments_under_an_autoscaler(
    operator_process: OperatorProcess, namespace: str
) -> None:
    cluster = operator_process.cluster
    apply_manifest(cluster, blacklist_service("scaled", namespace, autoscaling={"maxReplicas": 3}))
    wait_for(
        lambda: status_of(operator_process, namespace).get("readyReplicas") == 1,
        90,
        "status.readyReplicas 1",
        operator_process,
    )
    # What an autoscaler does: scale Deployment N; spec.replicas stays as it was.
    cluster.kubectl("scale", "deployment/scaled", "-n", namespace, "--replicas=2")
    wait_for(
        lambda: status_of(operator_process, namespace).get("replicas") == 2,
        90,
        "status.replicas 2",
        operator_process,
    )
    body = get_json(cluster, "bls", "scaled", "-n", namespace)
    assert body is not None
    assert body["spec"]["replicas"] == 1
