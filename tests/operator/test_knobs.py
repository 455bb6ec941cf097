"""The production knobs against the real control plane: budget, autoscaler, Ingress.

The cluster has no metrics API, so the HorizontalPodAutoscaler never scales on
CPU: these tests check the operator's handling of the autoscaler object and of
the Deployment's ``spec.replicas``, which they change as the autoscaler would
(through the scale subresource, under another field manager).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blacklist_devtools.kube import Cluster
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    running_pods,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
SERVICE_PODS = "app.kubernetes.io/instance=demo,app.kubernetes.io/component=service"


def settled(cluster: Cluster, namespace: str, *, ready: bool = False) -> bool:
    """Whether the reconcile of the current generation wrote its status (and Ready=True)."""
    body = get_json(cluster, "bls", "demo", "-n", namespace)
    if (
        body is None
        or body.get("status", {}).get("observedGeneration") != (body["metadata"]["generation"])
    ):
        return False
    return not ready or condition(body, "Ready").get("status") == "True"


def patch_spec(cluster: Cluster, namespace: str, spec: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch", "bls", "demo", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec})
    )


def replicas(cluster: Cluster, namespace: str) -> int | None:
    deployment = get_json(cluster, "deployment", "demo", "-n", namespace)
    return None if deployment is None else deployment["spec"].get("replicas")


def replica_owners(cluster: Cluster, namespace: str) -> set[str]:
    """The field managers that own the service Deployment's spec.replicas."""
    deployment = (
        get_json(cluster, "deployment", "demo", "-n", namespace, "--show-managed-fields") or {}
    )
    return {
        entry["manager"]
        for entry in deployment.get("metadata", {}).get("managedFields", [])
        if "f:replicas" in entry.get("fieldsV1", {}).get("f:spec", {})
    }


def evict(cluster: Cluster, namespace: str, pod: str) -> int:
    """Ask the eviction API to evict ``pod``, as a node drain does; the HTTP status."""
    with cluster.api_client() as api:
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=namespace))
        try:
            client.CoreV1Api(api).create_namespaced_pod_eviction(pod, namespace, body)
        except ApiException as error:
            return int(error.status)
    return 201


def test_budget_refuses_evictions_and_follows_the_replicas(
    operator_process: OperatorProcess, namespace: str
) -> None:
    cluster = operator_process.cluster
    manifest = blacklist_service("demo", namespace, replicas=2, disruption={"maxUnavailable": 0})
    apply_manifest(cluster, manifest)
    wait_for(lambda: settled(cluster, namespace, ready=True), 120, "Ready=True", operator_process)

    budget = get_json(cluster, "pdb", "demo", "-n", namespace)
    assert budget is not None
    assert budget["spec"]["maxUnavailable"] == 0
    assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "service"
    deployment = get_json(cluster, "deployment", "demo", "-n", namespace) or {}
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["terminationGracePeriodSeconds"] >= 30
    assert len(pod_spec["topologySpreadConstraints"]) == 2

    # A drain at the API level: the eviction of a service pod is refused by the budget.
    pods = running_pods(cluster, namespace, SERVICE_PODS)
    assert len(pods) == 2
    assert evict(cluster, namespace, pods[0]["metadata"]["name"]) == 429
    assert len(running_pods(cluster, namespace, SERVICE_PODS)) == 2

    patch_spec(cluster, namespace, {"disruption": {"maxUnavailable": 1}})
    wait_for(
        lambda: (
            (get_json(cluster, "pdb", "demo", "-n", namespace) or {})
            .get("status", {})
            .get("disruptionsAllowed")
            == 1
        ),
        60,
        "the budget to allow one disruption",
        operator_process,
    )
    assert evict(cluster, namespace, pods[0]["metadata"]["name"]) == 201

    patch_spec(cluster, namespace, {"replicas": 1})
    wait_for(
        lambda: get_json(cluster, "pdb", "demo", "-n", namespace) is None,
        60,
        "the budget to be deleted at one replica",
        operator_process,
    )
    wait_for(lambda: settled(cluster, namespace), 60, "the status of one replica", operator_process)
    assert get_json(cluster, "pdb", "demo", "-n", namespace) is None


def test_autoscaler_owns_the_replicas_while_it_is_set(
    operator_process: OperatorProcess, namespace: str
) -> None:
    cluster = operator_process.cluster
    apply_manifest(cluster, blacklist_service("demo", namespace, replicas=2))
    wait_for(lambda: settled(cluster, namespace), 60, "the first status", operator_process)
    assert replicas(cluster, namespace) == 2
    assert replica_owners(cluster, namespace) == {"blacklist-operator"}

    # Enabling the autoscaler does not drop the Deployment to the default of 1 replica.
    autoscaling = {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 60}
    patch_spec(cluster, namespace, {"autoscaling": autoscaling})
    wait_for(
        lambda: get_json(cluster, "hpa", "demo", "-n", namespace) is not None,
        60,
        "HorizontalPodAutoscaler demo",
        operator_process,
    )
    wait_for(lambda: settled(cluster, namespace), 60, "the autoscaled status", operator_process)
    autoscaler = get_json(cluster, "hpa", "demo", "-n", namespace) or {}
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "demo"
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (1, 4)
    assert autoscaler["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert replicas(cluster, namespace) == 2
    assert "blacklist-operator" not in replica_owners(cluster, namespace)
    assert get_json(cluster, "pdb", "demo", "-n", namespace) is not None

    # The autoscaler scales through the scale subresource; the operator leaves it be,
    # through a reconcile of a new generation and the drift watch of the Deployment.
    cluster.kubectl("scale", "deployment", "demo", "-n", namespace, "--replicas=3")
    patch_spec(cluster, namespace, {"disruption": {"maxUnavailable": 2}})
    wait_for(lambda: settled(cluster, namespace), 60, "the next reconcile", operator_process)
    wait_for(
        lambda: (
            (get_json(cluster, "pdb", "demo", "-n", namespace) or {})
            .get("spec", {})
            .get("maxUnavailable")
            == 2
        ),
        60,
        "the budget's new maxUnavailable",
        operator_process,
    )
    assert replicas(cluster, namespace) == 3
    wait_for(
        lambda: settled(cluster, namespace, ready=True),
        120,
        "Ready=True with 3 replicas",
        operator_process,
    )
    body = get_json(cluster, "bls", "demo", "-n", namespace)
    assert "3/3" in condition(body, "Ready")["message"]

    # Without the autoscaler the operator owns spec.replicas again.
    patch_spec(cluster, namespace, {"autoscaling": None})
    wait_for(
        lambda: get_json(cluster, "hpa", "demo", "-n", namespace) is None,
        60,
        "the autoscaler to be deleted",
        operator_process,
    )
    wait_for(lambda: replicas(cluster, namespace) == 2, 60, "spec.replicas 2", operator_process)
    assert "blacklist-operator" in replica_owners(cluster, namespace)
    cluster.kubectl("scale", "deployment", "demo", "-n", namespace, "--replicas=3")
    wait_for(lambda: replicas(cluster, namespace) == 2, 60, "the drift undone", operator_process)


def test_ingress_follows_the_spec(operator_process: OperatorProcess, namespace: str) -> None:
    cluster = operator_process.cluster
    ingress_spec = {"host": "blacklist.example.com", "path": "/api", "tlsSecretName": "demo-tls"}
    apply_manifest(cluster, blacklist_service("demo", namespace, port=5004, ingress=ingress_spec))
    wait_for(
        lambda: get_json(cluster, "ingress", "demo", "-n", namespace) is not None,
        60,
        "Ingress demo",
        operator_process,
    )
    ingress = get_json(cluster, "ingress", "demo", "-n", namespace) or {}
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "blacklist.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/api", "Prefix")
    assert path["backend"]["service"] == {"name": "demo", "port": {"number": 5004}}
    assert ingress["spec"]["tls"] == [
        {"hosts": ["blacklist.example.com"], "secretName": "demo-tls"}
    ]
    assert ingress["metadata"]["ownerReferences"][0]["kind"] == "BlacklistService"

    # An edit is drift, taken back.
    cluster.kubectl(
        "patch",
        "ingress",
        "demo",
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/spec/rules/0/host", "value": "x.example.com"}]),
    )
    wait_for(
        lambda: (
            (get_json(cluster, "ingress", "demo", "-n", namespace) or {})["spec"]["rules"][0][
                "host"
            ]
            == "blacklist.example.com"
        ),
        60,
        "the Ingress host restored",
        operator_process,
    )

    patch_spec(cluster, namespace, {"ingress": None})
    wait_for(
        lambda: get_json(cluster, "ingress", "demo", "-n", namespace) is None,
        60,
        "the Ingress to be deleted",
        operator_process,
    )


def test_a_child_the_api_refused_is_applied_once_the_refusal_ends(
    operator_process: OperatorProcess, namespace: str
) -> None:
    """A refused apply is retried by itself: no event or resync is needed to bring the child."""
    cluster = operator_process.cluster
    # The quota refuses every PodDisruptionBudget in the namespace; nothing else.
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-budgets", "namespace": namespace},
        "spec": {"hard": {"count/poddisruptionbudgets.policy": "0"}},
    }
    apply_manifest(cluster, quota)
    wait_for(
        lambda: (
            "count/poddisruptionbudgets.policy"
            in (
                (get_json(cluster, "resourcequota", "no-budgets", "-n", namespace) or {}).get(
                    "status"
                )
                or {}
            ).get("hard", {})
        ),
        30,
        "the quota to be in force",
        operator_process,
    )
    apply_manifest(cluster, blacklist_service("demo", namespace, replicas=2))
    wait_for(
        lambda: (
            "PodDisruptionBudget"
            in condition(get_json(cluster, "bls", "demo", "-n", namespace) or {}, "Ready").get(
                "message", ""
            )
        ),
        60,
        "Ready to name the refused budget",
        operator_process,
    )
    assert get_json(cluster, "pdb", "demo", "-n", namespace) is None

    # Lifting the quota changes nothing the operator watches: only its retry brings the budget,
    # well before the 300 s resync.
    cluster.kubectl("delete", "resourcequota", "no-budgets", "-n", namespace)
    wait_for(
        lambda: get_json(cluster, "pdb", "demo", "-n", namespace) is not None,
        90,
        "the budget once the quota is gone",
        operator_process,
    )
    wait_for(lambda: settled(cluster, namespace, ready=True), 120, "Ready=True", operator_process)
