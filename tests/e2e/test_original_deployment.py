"""The original deployment in one command, on the real node: NodePort 30911 and port-forward.

``helm install flask-blacklist chart -n microservices --set
blacklistService.enabled=true`` installs the operator and a BlacklistService
that serves on port 5004 with NodePort 30911. Here the database image is set to
the locally built PostgreSQL (nothing can be pulled); everything else is the
chart's defaults. A client calls the node's port 30911 from its own address,
and ``kubectl port-forward svc/flask-blacklist 5004`` answers too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import images, stack
from blacklist_devtools.http import answers, get
from blacklist_devtools.kube import Cluster, port_forward, wait_until
from blacklist_devtools.network import CLIENT_ADDRESSES, NODE_ADDRESS

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "microservices"
RELEASE = "flask-blacklist"


@pytest.fixture(scope="module")
def original(cluster: Cluster) -> Iterator[Cluster]:
    """The seed's one-liner, installed and Ready; uninstalled afterwards."""
    helm = local_cluster.binary("helm")
    cluster.kubectl("create", "namespace", NAMESPACE)
    try:
        stack.helm(
            cluster, helm, "install", RELEASE, str(stack.REPO_ROOT / "chart"), "-n", NAMESPACE,
            "--set", "blacklistService.enabled=true",
            "--set", f"blacklistService.spec.database.image={images.reference('postgres')}",
            stack.TAKE_OWNERSHIP, *stack.default_image_values(),
            "--wait", "--timeout", "180s",
        )  # fmt: skip
        stack.wait_ready(cluster, NAMESPACE, RELEASE, stack.READY_TIMEOUT)
        yield cluster
    finally:
        subprocess.run(
            [helm, "--kubeconfig", str(cluster.kubeconfig), "uninstall", RELEASE, "-n", NAMESPACE,
             "--wait", "--timeout", "120s"],
            capture_output=True, check=False,
        )  # fmt: skip
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_node_port_30911_answers_a_client(original: Cluster) -> None:
    url = f"http://{NODE_ADDRESS}:30911"
    client = CLIENT_ADDRESSES[4]
    assert wait_until(lambda: answers(f"{url}/?n=88", client), timeout=30)
    answer = get(f"{url}/?n=88", source=client)
    assert (answer.status, answer.body) == (200, "7744.0")


def test_port_forward_to_the_service_answers(original: Cluster) -> None:
    with port_forward(original, NAMESPACE, f"svc/{RELEASE}", 5004) as port:
        assert get(f"http://127.0.0.1:{port}/?n=88").body == "7744.0"


def test_helm_uninstall_removes_the_resource_and_its_children(original: Cluster) -> None:
    """The release holds the operator and the resource; nothing may be left holding on."""
    stack.helm(
        original, local_cluster.binary("helm"), "uninstall", RELEASE, "-n", NAMESPACE,
        "--wait", "--timeout", "120s",
    )  # fmt: skip

    def left() -> str:
        return original.kubectl(
            "get", "blacklistservices,deployments,services,persistentvolumeclaims",
            "-n", NAMESPACE, "-o", "name",
        ).strip()  # fmt: skip

    assert wait_until(lambda: not left(), timeout=120, interval=0.5), f"left behind: {left()}"
