"""The local node is a real one: containers, cluster DNS, Services, NodePorts, kubectl's paths.

Each test runs the product's own service image (alone, on its embedded SQLite
ledger) as a real container on the node and checks one thing a cluster user
relies on: names resolve through cluster DNS, ClusterIPs and NodePorts are
served by kube-proxy, a NodePort with ``externalTrafficPolicy: Local`` keeps
the client's address, ``kubectl logs``, ``exec`` and ``port-forward`` work,
and the kubelet restarts a container that dies.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import images, node, nodeconfig
from blacklist_devtools.http import answers, get
from blacklist_devtools.kube import Cluster, port_forward, wait_until
from blacklist_devtools.network import CLIENT_ADDRESSES, NODE_ADDRESS

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

LABELS = {"app": "squares"}


def squares_manifests() -> list[dict[str, Any]]:
    """The service image alone, one replica, behind a NodePort Service that keeps client IPs."""
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "squares"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": LABELS},
                "template": {
                    "metadata": {"labels": LABELS},
                    "spec": {
                        "containers": [
                            {
                                "name": "service",
                                "image": images.reference("service"),
                                "ports": [{"containerPort": 5004, "name": "http"}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/readyz", "port": "http"},
                                    "periodSeconds": 1,
                                },
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "squares"},
            "spec": {
                "type": "NodePort",
                "externalTrafficPolicy": "Local",
                "selector": LABELS,
                "ports": [{"port": 5004, "targetPort": "http"}],
            },
        },
    ]


@pytest.fixture(scope="module")
def squares(cluster: Cluster) -> Iterator[tuple[str, dict[str, Any]]]:
    """A namespace running the service image, Ready; yields (namespace, its pod)."""
    namespace = f"node-{os.urandom(4).hex()}"
    cluster.kubectl("create", "namespace", namespace)
    listed = {"apiVersion": "v1", "kind": "List", "items": squares_manifests()}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(listed))
    cluster.kubectl("rollout", "status", "deployment/squares", "-n", namespace, "--timeout=120s")
    pod = pods(cluster, namespace)[0]
    yield namespace, pod
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """The live pods of the squares Deployment."""
    listed = json.loads(
        cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=squares", "-o", "json")
    )["items"]
    return [pod for pod in listed if not pod["metadata"].get("deletionTimestamp")]


def in_pod(cluster: Cluster, namespace: str, pod: dict[str, Any], code: str) -> str:
    """Run Python ``code`` inside the pod with ``kubectl exec``; return its stdout."""
    return cluster.kubectl(
        "exec", "-n", namespace, pod["metadata"]["name"], "--", "python", "-c", code
    ).strip()


def test_the_pod_runs_on_the_real_node_with_a_pod_address(
    cluster: Cluster, squares: tuple[str, dict[str, Any]]
) -> None:
    _, pod = squares
    assert pod["spec"]["nodeName"] == nodeconfig.NODE_NAME
    assert pod["status"]["podIP"].startswith("10.244.0.")
    assert get(f"http://{pod['status']['podIP']}:5004/?n=88").body == "7744.0"


def test_cluster_dns_and_the_kubernetes_service_from_a_pod(
    cluster: Cluster, squares: tuple[str, dict[str, Any]]
) -> None:
    namespace, pod = squares
    resolve = "import socket; print(socket.gethostbyname({!r}))"
    assert in_pod(cluster, namespace, pod, resolve.format("kubernetes.default")) == "10.96.0.1"
    own = in_pod(cluster, namespace, pod, resolve.format(f"squares.{namespace}.svc.cluster.local"))
    service = json.loads(cluster.kubectl("get", "svc", "squares", "-n", namespace, "-o", "json"))
    assert own == service["spec"]["clusterIP"]
    # The API server answers through its ClusterIP (kube-proxy to the node's address).
    reach = (
        "import socket; socket.create_connection(('kubernetes.default.svc', 443), 5).close();"
        " print('connected')"
    )
    assert in_pod(cluster, namespace, pod, reach) == "connected"


def test_a_node_port_keeps_the_client_address(
    cluster: Cluster, squares: tuple[str, dict[str, Any]]
) -> None:
    namespace, pod = squares
    service = json.loads(cluster.kubectl("get", "svc", "squares", "-n", namespace, "-o", "json"))
    node_url = f"http://{NODE_ADDRESS}:{service['spec']['ports'][0]['nodePort']}"
    banned, bystander = CLIENT_ADDRESSES[2], CLIENT_ADDRESSES[3]
    # kube-proxy serves the port once the endpoint is ready: moments after the rollout.
    assert wait_until(lambda: answers(f"{node_url}/?n=88", bystander), timeout=30)
    assert get(f"{node_url}/?n=88", source=bystander).body == "7744.0"
    assert get(f"{node_url}/blacklisted", source=banned).status == 444
    # The service banned the address it saw, so it saw the client's own address.
    assert get(f"{node_url}/?n=2", source=banned).status == 403
    assert get(f"http://{pod['status']['podIP']}:5004/?n=2", source=banned).status == 403
    assert get(f"{node_url}/?n=2", source=bystander).body == "4.0"


def test_kubectl_logs_exec_and_port_forward(
    cluster: Cluster, squares: tuple[str, dict[str, Any]]
) -> None:
    namespace, pod = squares
    name = pod["metadata"]["name"]
    assert in_pod(cluster, namespace, pod, "print(6 * 7)") == "42"
    get(f"http://{pod['status']['podIP']}:5004/?n=3")
    logs = cluster.kubectl("logs", "-n", namespace, name)
    assert logs.strip(), "kubectl logs returned nothing"
    with port_forward(cluster, namespace, "svc/squares", 5004) as port:
        assert get(f"http://127.0.0.1:{port}/?n=88").body == "7744.0"


def test_the_kubelet_restarts_a_container_that_dies(
    cluster: Cluster, squares: tuple[str, dict[str, Any]]
) -> None:
    namespace, _ = squares
    (pid,) = node.container_pids(
        local_cluster.LOCAL_DIR, local_cluster.binary("crictl"), namespace, "service"
    )
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        (current,) = pods(cluster, namespace)
        statuses = current["status"].get("containerStatuses") or [{}]
        return bool(statuses[0].get("restartCount", 0) >= 1 and statuses[0].get("ready"))

    assert wait_until(restarted, timeout=90, interval=0.5)
    started = time.monotonic()
    ip = pods(cluster, namespace)[0]["status"]["podIP"]
    assert wait_until(lambda: get(f"http://{ip}:5004/?n=5").body == "25.0", timeout=30)
    assert time.monotonic() - started < 30
