"""Smoke tests that prove the local control plane is a real Kubernetes.

Each test exercises one behaviour the operator depends on and that a fake API
would not have: schema validation, controllers, the scheduler and the real
node's kubelet, garbage collection, NodePort allocation, volume binding,
tokens and RBAC.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest

from blacklist_devtools import nodeconfig
from blacklist_devtools.kube import Cluster, wait_until

pytestmark = pytest.mark.cluster


def apply(cluster: Cluster, manifest: dict[str, Any], namespace: str | None = None) -> str:
    """Apply one manifest given as a dict; return kubectl's output."""
    arguments = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    return cluster.kubectl(*arguments, input=json.dumps(manifest))


def get(cluster: Cluster, *arguments: str) -> dict[str, Any]:
    """``kubectl get ... -o json`` as a dict."""
    result: dict[str, Any] = json.loads(cluster.kubectl("get", *arguments, "-o", "json"))
    return result


def test_server_reports_its_real_version(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"].startswith("v1.36.")
    assert version["serverVersion"]["major"] == "1"


def test_crd_schema_rejects_an_invalid_object(cluster: Cluster, namespace: str) -> None:
    group = f"smoke{namespace.replace('-', '')}.example.com"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 1, "maximum": 5}
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    apply(cluster, crd)
    try:
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=30s"
        )
        good = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "good"}}
        apply(cluster, {**good, "spec": {"size": 3}}, namespace)
        bad = {**good, "metadata": {"name": "bad"}, "spec": {"size": 9}}
        with pytest.raises(subprocess.CalledProcessError) as rejected:
            apply(cluster, bad, namespace)
        assert "spec.size" in rejected.value.stderr
        assert "less than or equal to 5" in rejected.value.stderr
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                # The smallest real image the node has: the sandbox's own.
                "spec": {"containers": [{"name": "main", "image": nodeconfig.PAUSE_IMAGE}]},
            },
        },
    }


def test_deployment_gets_running_ready_pods_on_the_real_node(
    cluster: Cluster, namespace: str
) -> None:
    apply(cluster, deployment("web", 3), namespace)
    cluster.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s")
    replica_sets = get(cluster, "replicasets", "-n", namespace, "-l", "app=web")["items"]
    assert len(replica_sets) == 1
    pods = get(cluster, "pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 3
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"] == nodeconfig.NODE_NAME
        assert pod["status"]["podIP"].startswith("10.244.")
        ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"


def test_deleting_an_owner_garbage_collects_its_dependents(
    cluster: Cluster, namespace: str
) -> None:
    owner = json.loads(
        cluster.kubectl("create", "configmap", "owner", "-n", namespace, "-o", "json")
    )
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "data": {"key": "value"},
    }
    apply(cluster, dependent, namespace)
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    def dependent_is_gone() -> bool:
        listed = get(
            cluster, "configmaps", "-n", namespace, "--field-selector=metadata.name=dependent"
        )
        return not listed["items"]

    assert wait_until(dependent_is_gone, timeout=30)


def test_nodeport_service_gets_a_port_in_range(cluster: Cluster, namespace: str) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "web"},
            "externalTrafficPolicy": "Local",
            "ports": [{"port": 5004, "targetPort": 5004}],
        },
    }
    apply(cluster, service, namespace)
    node_port = get(cluster, "service", "web", "-n", namespace)["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767


def test_claim_of_the_default_class_binds(cluster: Cluster, namespace: str) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    apply(cluster, claim, namespace)

    def bound() -> bool:
        phase: str = get(cluster, "pvc", "data", "-n", namespace)["status"].get("phase", "")
        return phase == "Bound"

    assert wait_until(bound, timeout=30)


def test_token_request_and_rbac(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cluster.kubectl(
        "create", "role", "read-configmaps", "--verb=get,list", "--resource=configmaps",
        "-n", namespace,
    )  # fmt: skip
    cluster.kubectl(
        "create", "rolebinding", "reader", "--role=read-configmaps",
        f"--serviceaccount={namespace}:reader", "-n", namespace,
    )  # fmt: skip
    token = cluster.kubectl("create", "token", "reader", "-n", namespace).strip()
    assert token.count(".") == 2  # a signed JWT

    config = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json"))
    authority = config["clusters"][0]["cluster"]["certificate-authority-data"]
    context = ssl.create_default_context(cadata=base64.b64decode(authority).decode())

    def call(path: str) -> int:
        request = urllib.request.Request(
            f"{cluster.server}{path}", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    assert call(f"/api/v1/namespaces/{namespace}/configmaps") == 200
    assert call(f"/api/v1/namespaces/{namespace}/secrets") == 403
    assert call("/api/v1/namespaces/default/configmaps") == 403
    subject = f"--as=system:serviceaccount:{namespace}:reader"
    allowed = cluster.kubectl("auth", "can-i", "list", "configmaps", "-n", namespace, subject)
    assert allowed.strip() == "yes"
    denied = cluster.kubectl(
        "auth", "can-i", "delete", "configmaps", "-n", namespace, subject, check=False
    )
    assert denied.strip() == "no"
