"""The builders of the production knobs: disruption budget, autoscaler, Ingress, pod shutdown."""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders import absent_children, build_children, build_service_deployment
from blacklist_operator.builders.availability import (
    applies_replicas,
    build_horizontal_pod_autoscaler,
    build_pod_disruption_budget,
    build_replicas_hand_over,
)
from blacklist_operator.builders.ingress import build_ingress
from blacklist_operator.model.resource import BlacklistService, parse

SELECTOR = {
    "app.kubernetes.io/name": "blacklist-service",
    "app.kubernetes.io/instance": "demo",
    "app.kubernetes.io/component": "service",
}
AUTOSCALING = {"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}


def make(**spec: Any) -> BlacklistService:
    return parse(
        {
            "metadata": {"name": "demo", "namespace": "team", "uid": "uid-1", "generation": 1},
            "spec": spec,
        }
    )


def kinds(bls: BlacklistService) -> set[str]:
    return {child["kind"] for child in build_children(bls)}


def test_one_replica_has_no_budget_and_the_optional_children_are_absent() -> None:
    bls = make()
    assert build_pod_disruption_budget(bls) is None
    assert build_horizontal_pod_autoscaler(bls) is None
    assert build_ingress(bls) is None
    assert not kinds(bls) & {
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
        "ServiceMonitor",
    }
    assert absent_children(bls) == [
        ("networking.k8s.io/v1", "Ingress", "demo"),
        ("policy/v1", "PodDisruptionBudget", "demo"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "demo"),
        ("v1", "Service", "demo-metrics"),
        ("monitoring.coreos.com/v1", "ServiceMonitor", "demo"),
        ("batch/v1", "CronJob", "demo-backup"),
    ]


def test_budget_with_replicas_or_autoscaling() -> None:
    budget = build_pod_disruption_budget(make(replicas=3))
    assert budget is not None
    assert (budget["apiVersion"], budget["kind"]) == ("policy/v1", "PodDisruptionBudget")
    assert budget["metadata"]["name"] == "demo"
    assert budget["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == {"matchLabels": SELECTOR}
    zero = build_pod_disruption_budget(make(replicas=2, disruption={"maxUnavailable": 0}))
    assert zero is not None
    assert zero["spec"]["maxUnavailable"] == 0
    assert build_pod_disruption_budget(make(autoscaling=AUTOSCALING)) is not None
    assert ("policy/v1", "PodDisruptionBudget", "demo") not in absent_children(make(replicas=2))


def test_a_roll_takes_down_no_more_pods_than_the_disruption_budget() -> None:
    def strategy(**spec: Any) -> Any:
        return build_service_deployment(make(**spec))["spec"]["strategy"]

    assert strategy(replicas=4, disruption={"maxUnavailable": 2}) == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 2, "maxSurge": "25%"},
    }
    assert strategy(replicas=4)["rollingUpdate"]["maxUnavailable"] == 1
    assert strategy(replicas=4, disruption={"maxUnavailable": 0})["rollingUpdate"] == {
        "maxUnavailable": 0,
        "maxSurge": "25%",
    }
    # Never the last pod: one replica is replaced surge-first, whatever the budget.
    assert strategy(replicas=1)["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy(replicas=3, disruption={"maxUnavailable": 5})["rollingUpdate"] == {
        "maxUnavailable": 2,
        "maxSurge": "25%",
    }
    # Under an autoscaler, its minimum is what may be running.
    assert strategy(autoscaling=AUTOSCALING)["rollingUpdate"]["maxUnavailable"] == 1
    single = {**AUTOSCALING, "minReplicas": 1}
    assert strategy(autoscaling=single)["rollingUpdate"]["maxUnavailable"] == 0


def test_autoscaler_targets_the_deployment_by_cpu() -> None:
    bls = make(autoscaling=AUTOSCALING)
    autoscaler = build_horizontal_pod_autoscaler(bls)
    assert autoscaler is not None
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    spec = autoscaler["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 5)
    (metric,) = spec["metrics"]
    assert metric["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert "HorizontalPodAutoscaler" in kinds(bls)


def test_with_autoscaling_the_deployment_leaves_replicas_to_the_autoscaler() -> None:
    assert build_service_deployment(make(replicas=3))["spec"]["replicas"] == 3
    assert (
        "replicas"
        not in build_service_deployment(make(replicas=3, autoscaling=AUTOSCALING))["spec"]
    )
    assert build_replicas_hand_over(make(autoscaling=AUTOSCALING), 4) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "demo", "namespace": "team"},
        "spec": {"replicas": 4},
    }


def test_who_applies_replicas_is_read_from_the_managed_fields() -> None:
    def entry(manager: str, operation: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"manager": manager, "operation": operation, "fieldsV1": {"f:spec": spec}}

    deployment = {
        "metadata": {
            "managedFields": [
                entry("blacklist-operator", "Apply", {"f:replicas": {}, "f:template": {}}),
                entry("kube-controller-manager", "Update", {"f:replicas": {}}),
            ]
        }
    }
    assert applies_replicas(deployment, "blacklist-operator")
    assert not applies_replicas(deployment, "kube-controller-manager")
    handed = {"metadata": {"managedFields": [entry("blacklist-operator", "Apply", {})]}}
    assert not applies_replicas(handed, "blacklist-operator")
    assert not applies_replicas({}, "blacklist-operator")


def test_ingress_routes_the_host_and_path_to_the_service_port() -> None:
    ingress = build_ingress(make(port=8080, ingress={"host": "bl.example.com", "path": "/api"}))
    assert ingress is not None
    assert (ingress["apiVersion"], ingress["metadata"]["name"]) == ("networking.k8s.io/v1", "demo")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "bl.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/api",
            "pathType": "Prefix",
            "backend": {"service": {"name": "demo", "port": {"number": 8080}}},
        }
    ]
    assert "tls" not in ingress["spec"]
    assert "ingressClassName" not in ingress["spec"]
    full = build_ingress(
        make(ingress={"host": "bl.example.com", "className": "nginx", "tlsSecretName": "bl-tls"})
    )
    assert full is not None
    assert full["spec"]["ingressClassName"] == "nginx"
    assert full["spec"]["tls"] == [{"hosts": ["bl.example.com"], "secretName": "bl-tls"}]
    assert full["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/"


def test_service_pods_spread_and_stop_gracefully() -> None:
    pod = build_service_deployment(make(replicas=2))["spec"]["template"]["spec"]
    spread = pod["topologySpreadConstraints"]
    assert [item["topologyKey"] for item in spread] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    for item in spread:
        assert item["maxSkew"] == 1
        assert item["whenUnsatisfiable"] == "ScheduleAnyway"
        assert item["labelSelector"] == {"matchLabels": SELECTOR}
    (container,) = pod["containers"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    # The preStop pause plus the server's graceful timeout (25 s) fit in the grace period.
    assert pod["terminationGracePeriodSeconds"] >= 5 + 25
