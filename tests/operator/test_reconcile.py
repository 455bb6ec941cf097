"""The operator against the real control plane: children, updates, drift, deletion."""

from __future__ import annotations

import json
import logging
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from blacklist_devtools import images
from blacklist_devtools.kube import Cluster
from blacklist_operator.kube.api import KubernetesApi
from blacklist_operator.reconcile.children import reconcile
from blacklist_operator.runtime.config import AddressMap, OperatorConfig
from blacklist_operator.runtime.state import Runtime
from tests.conftest import namespace_name
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
STANDARD_LABELS = {
    "app.kubernetes.io/name": "blacklist-service",
    "app.kubernetes.io/managed-by": "blacklist-operator",
}


def node_port_for(namespace: str, offset: int = 0) -> int:
    """A NodePort unlikely to collide with other tests' (derived from the namespace)."""
    return 30000 + (zlib.crc32(namespace.encode()) + offset) % 2700


def ready(cluster: Cluster, namespace: str, name: str, generation: int | None = None) -> bool:
    body = get_json(cluster, "bls", name, "-n", namespace)
    ready_condition = condition(body, "Ready")
    if ready_condition.get("status") != "True" or body is None:
        return False
    wanted = generation if generation is not None else body["metadata"]["generation"]
    return bool(body["status"].get("observedGeneration") == wanted)


def get(cluster: Cluster, *arguments: str) -> dict[str, Any]:
    body = get_json(cluster, *arguments)
    assert body is not None, arguments
    return body


def test_create_makes_every_child_and_reports_ready(
    operator_process: OperatorProcess, namespace: str
) -> None:
    cluster = operator_process.cluster
    node_port = node_port_for(namespace)
    apply_manifest(cluster, blacklist_service("demo", namespace, replicas=2, nodePort=node_port))
    wait_for(lambda: ready(cluster, namespace, "demo"), 90, "Ready=True", operator_process)

    body = get(cluster, "bls", "demo", "-n", namespace)
    uid = body["metadata"]["uid"]
    assert body["status"]["nodePort"] == node_port
    assert body["status"]["bannedCount"] == 0
    # Nothing to release by hand: no finalizer that could hold the resource without us.
    assert not body["metadata"].get("finalizers")
    children = [
        ("deployment", "demo", "service"),
        ("service", "demo", "service"),
        ("deployment", "demo-postgres", "database"),
        ("service", "demo-postgres", "database"),
        ("pvc", "demo-postgres", "database"),
        ("configmap", "demo-db", "database"),
        ("secret", "demo-db", "database"),
        ("configmap", "demo-banlist", "banlist"),
        ("serviceaccount", "demo", "service"),
        ("role", "demo-banlist-reader", "service"),
        ("rolebinding", "demo-banlist-reader", "service"),
        ("networkpolicy", "demo-postgres", "database"),
    ]
    for kind, name, component in children:
        child = get(cluster, kind, name, "-n", namespace)
        labels = child["metadata"]["labels"]
        assert STANDARD_LABELS.items() <= labels.items(), (kind, name)
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/component"] == component
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["uid"], owner["controller"]) == (uid, True), (kind, name)

    deployment = get(cluster, "deployment", "demo", "-n", namespace)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["status"]["availableReplicas"] == 2
    service = get(cluster, "service", "demo", "-n", namespace)
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["ports"][0]["port"] == 5004
    assert service["spec"]["ports"][0]["nodePort"] == node_port
    database = get(cluster, "deployment", "demo-postgres", "-n", namespace)
    assert database["spec"]["strategy"]["type"] == "Recreate"
    assert get(cluster, "service", "demo-postgres", "-n", namespace)["spec"]["type"] == "ClusterIP"
    assert get(cluster, "configmap", "demo-db", "-n", namespace)["data"]["port"] == "5432"
    banlist = get(cluster, "configmap", "demo-banlist", "-n", namespace)
    assert {key: banlist["data"][key] for key in ("addresses", "count", "parts")} == {
        "addresses": "",
        "count": "0",
        "parts": "0",
    }
    assert banlist["data"]["capacity"] == "5000000"
    assert len(get(cluster, "secret", "demo-db", "-n", namespace)["data"]) == 2

    def created_event() -> bool:
        events = json.loads(
            cluster.kubectl(
                "get", "events", "-n", namespace, "--field-selector", "reason=Created", "-o", "json"
            )
        )["items"]
        return any("Deployment demo" in event["message"] for event in events)

    wait_for(created_event, 10, "a Created Event", operator_process)


def test_spec_changes_are_applied(operator_process: OperatorProcess, namespace: str) -> None:
    cluster = operator_process.cluster
    apply_manifest(cluster, blacklist_service("demo", namespace))
    wait_for(lambda: ready(cluster, namespace, "demo"), 90, "first Ready", operator_process)
    node_port = node_port_for(namespace, 1)
    # The same image by digest alone (no tag): a new image reference that runs.
    other_image = images.by_digest("service")
    apply_manifest(
        cluster,
        blacklist_service("demo", namespace, replicas=3, image=other_image, nodePort=node_port),
    )
    wait_for(lambda: ready(cluster, namespace, "demo", 2), 90, "Ready at gen 2", operator_process)
    deployment = get(cluster, "deployment", "demo", "-n", namespace)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == other_image
    service = get(cluster, "service", "demo", "-n", namespace)
    assert service["spec"]["ports"][0]["nodePort"] == node_port
    assert get(cluster, "bls", "demo", "-n", namespace)["status"]["nodePort"] == node_port


def test_deleted_and_edited_children_are_restored(
    operator_process: OperatorProcess, namespace: str
) -> None:
    cluster = operator_process.cluster
    apply_manifest(cluster, blacklist_service("demo", namespace, replicas=2))
    wait_for(lambda: ready(cluster, namespace, "demo"), 90, "Ready", operator_process)
    secret = get(cluster, "secret", "demo-db", "-n", namespace)

    cluster.kubectl("scale", "deployment/demo", "--replicas=5", "-n", namespace)
    cluster.kubectl("delete", "service", "demo-postgres", "-n", namespace)
    cluster.kubectl("delete", "configmap", "demo-banlist", "-n", namespace)
    cluster.kubectl(
        "patch", "configmap", "demo-db", "-n", namespace, "-p", '{"data":{"host":"evil"}}'
    )
    # From the last edit: kubectl itself may take seconds on a busy machine.
    started = time.monotonic()

    def restored() -> bool:
        deployment = get_json(cluster, "deployment", "demo", "-n", namespace)
        settings = get_json(cluster, "configmap", "demo-db", "-n", namespace)
        return (
            deployment is not None
            and deployment["spec"]["replicas"] == 2
            and get_json(cluster, "service", "demo-postgres", "-n", namespace) is not None
            and get_json(cluster, "configmap", "demo-banlist", "-n", namespace) is not None
            and settings is not None
            and settings["data"]["host"] == f"demo-postgres.{namespace}.svc"
        )

    wait_for(restored, 10, "every child restored", operator_process)
    assert time.monotonic() - started < 10
    cluster.kubectl("delete", "deployment", "demo", "-n", namespace)
    wait_for(
        lambda: get_json(cluster, "deployment", "demo", "-n", namespace) is not None,
        10,
        "the deleted Deployment restored",
        operator_process,
    )
    wait_for(lambda: ready(cluster, namespace, "demo"), 90, "Ready again", operator_process)
    assert get(cluster, "secret", "demo-db", "-n", namespace)["data"] == secret["data"]


def test_deletion_collects_children_and_releases_the_volume(
    operator_process: OperatorProcess,
    namespace: str,
    tmp_path: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cluster = operator_process.cluster
    # The resource names a path under the allowed prefix; the operator picks the directory,
    # PREFIX/NS/N, which the kubelet creates (root-owned) and the init container hands to 999.
    storage = {"hostPath": str(tmp_path / "pg"), "size": "256Mi"}
    apply_manifest(cluster, blacklist_service("gone", namespace, database={"storage": storage}))
    wait_for(lambda: ready(cluster, namespace, "gone"), 90, "Ready", operator_process)
    assert get(cluster, "bls", "gone", "-n", namespace)["metadata"]["finalizers"] == [
        "blacklist.dev/finalizer"
    ]
    claim = get(cluster, "pvc", "gone-postgres", "-n", namespace)
    assert claim["status"]["phase"] == "Bound"
    volume_name = claim["spec"]["volumeName"]
    volume = get(cluster, "pv", volume_name)
    chosen = tmp_path_factory.getbasetemp() / namespace / "gone"
    assert volume["spec"]["hostPath"]["path"] == str(chosen)
    assert volume["metadata"]["labels"]["app.kubernetes.io/instance"] == "gone"
    assert volume["metadata"]["labels"]["blacklist.dev/namespace"] == namespace

    cluster.kubectl("delete", "bls", "gone", "-n", namespace, "--wait=true", "--timeout=30s")

    def collected() -> bool:
        remaining = cluster.kubectl(
            "get",
            "deployments,services,configmaps,secrets,pvc,serviceaccounts,roles,rolebindings",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/instance=gone",
            "-o",
            "name",
        )
        return not remaining.strip() and get_json(cluster, "pv", volume_name) is None

    wait_for(collected, 60, "children collected and the PV released", operator_process)


def test_retain_on_delete_keeps_the_claim_and_the_secret(
    operator_process: OperatorProcess, namespace: str
) -> None:
    cluster = operator_process.cluster
    storage = {"retainOnDelete": True}
    apply_manifest(cluster, blacklist_service("kept", namespace, database={"storage": storage}))
    wait_for(lambda: ready(cluster, namespace, "kept"), 90, "Ready", operator_process)
    password = get(cluster, "secret", "kept-db", "-n", namespace)["data"]["password"]
    cluster.kubectl("delete", "bls", "kept", "-n", namespace, "--wait=true", "--timeout=30s")
    wait_for(
        lambda: get_json(cluster, "deployment", "kept-postgres", "-n", namespace) is None,
        60,
        "the Deployment collected",
    )
    assert get_json(cluster, "pvc", "kept-postgres", "-n", namespace) is not None
    apply_manifest(cluster, blacklist_service("kept", namespace, database={"storage": storage}))
    wait_for(lambda: ready(cluster, namespace, "kept"), 90, "Ready again", operator_process)
    assert get(cluster, "secret", "kept-db", "-n", namespace)["data"]["password"] == password


def test_a_namespace_being_deleted_is_left_to_go(cluster: Cluster) -> None:
    # Its own namespace, held in Terminating by a finalizer on a ConfigMap.
    namespace = namespace_name(__name__)
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("create", "configmap", "hold", "-n", namespace, "--from-literal=a=b")
    hold = '{"metadata":{"finalizers":["blacklist.dev/test-hold"]}}'
    cluster.kubectl("patch", "configmap", "hold", "-n", namespace, "--type=merge", "-p", hold)
    try:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        body = blacklist_service("demo", namespace)
        body["metadata"].update(uid=str(uuid.uuid4()), generation=1)
        with cluster.api_client() as api_client:
            runtime = Runtime(
                config=OperatorConfig(), api=KubernetesApi(api_client), addresses=AddressMap(None),
                executor=ThreadPoolExecutor(1),
            )  # fmt: skip
            outcome = reconcile(runtime, body, logging.getLogger("test"))
        # Nothing can be created there: the reconcile stops at the first refusal, with no
        # failure to report (an Event would be refused too) and no status to write.
        assert outcome.namespace_terminating
        assert outcome.failures == []
        assert outcome.created == []
    finally:
        cluster.kubectl(
            "patch", "configmap", "hold", "-n", namespace, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip
