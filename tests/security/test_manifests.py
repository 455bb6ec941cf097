"""Security properties of everything the operator builds, as tests.

Every container runs as non-root without privilege escalation, with every
capability dropped and a read-only root filesystem where the program allows
it; PostgreSQL is reachable only inside the cluster and only from the service
and the operator; no password appears in a ConfigMap or as a literal in a pod
spec.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from blacklist_operator.builders import build_children, build_database_secret
from blacklist_operator.model.resource import BlacklistService, parse

SPECS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "host path storage": {"database": {"storage": {"hostPath": "/mnt/data/denied-access"}}},
    "backup": {"database": {"backup": {"schedule": "@daily"}}},
    "mail with credentials": {
        "mail": {"host": "smtp.example.com", "port": 2525, "tls": True,
                 "secretRef": {"name": "mail-credentials"}},
    },
}  # fmt: skip


def make(spec: dict[str, Any]) -> BlacklistService:
    return parse(
        {"metadata": {"name": "demo", "namespace": "team", "uid": "u-1", "generation": 1},
         "spec": spec}
    )  # fmt: skip


def pod_specs(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pod spec of every Deployment and CronJob (the backup's) among ``children``."""
    templates = [child["spec"] for child in children if child["kind"] == "Deployment"] + [
        child["spec"]["jobTemplate"]["spec"] for child in children if child["kind"] == "CronJob"
    ]
    return [template["template"]["spec"] for template in templates]


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_every_container_is_unprivileged(spec: dict[str, Any]) -> None:
    for pod in pod_specs(build_children(make(spec))):
        pod_context = pod.get("securityContext", {})
        assert pod_context.get("runAsNonRoot") is True
        assert pod_context.get("runAsUser", 0) != 0
        assert pod.get("hostNetwork", False) is False
        assert pod.get("hostPID", False) is False
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context.get("privileged", False) is False
            assert context["capabilities"]["drop"] == ["ALL"]
            if container["name"] == "own-data":
                # The one exception: chown of a hostPath mount point, root with CAP_CHOWN only.
                assert "hostPath" in spec.get("database", {}).get("storage", {})
                assert context["capabilities"]["add"] == ["CHOWN"]
                assert context["readOnlyRootFilesystem"] is True
                assert [mount["name"] for mount in container["volumeMounts"]] == ["data"]
                continue
            assert not context["capabilities"].get("add")
            assert context.get("runAsUser", pod_context["runAsUser"]) != 0


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_every_root_filesystem_is_read_only(spec: dict[str, Any]) -> None:
    pods = pod_specs(build_children(make(spec)))
    assert len(pods) == 3 if "backup" in spec.get("database", {}) else 2
    for pod in pods:
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert "/tmp" in mounted  # the writable places are volumes


def test_postgres_is_reachable_only_from_the_service_and_the_operator() -> None:
    children = build_children(make({}), operator_namespace="blacklist-system")
    (service,) = [
        c for c in children if c["kind"] == "Service" and c["metadata"]["name"] == "demo-postgres"
    ]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert all("nodePort" not in port for port in service["spec"]["ports"])
    (policy,) = [c for c in children if c["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "database"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    peers = rule["from"]
    assert len(peers) == 2
    assert peers[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "service"
    assert peers[1]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "blacklist-operator"
    }
    assert peers[1]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "blacklist-system"
    }


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_no_password_outside_secrets(spec: dict[str, Any]) -> None:
    password = "Zq8tXw3LmP0vRk7sNc2yHb5jFd9gAe4u"
    bls = make(spec)
    secret = build_database_secret(bls, password)
    assert secret["kind"] == "Secret"
    for child in build_children(bls):
        text = json.dumps(child)
        assert password not in text
        if child["kind"] == "ConfigMap":
            assert not any("password" in key.lower() for key in child.get("data", {}))
    for pod in pod_specs(build_children(bls)):
        for container in pod["containers"]:
            for variable in container.get("env", []):
                if "PASSWORD" in variable["name"]:
                    assert "value" not in variable, variable["name"]
                    assert "secretKeyRef" in variable["valueFrom"]
