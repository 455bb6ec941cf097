"""What the manifests promise holds at run time, in the real containers of the local node.

For the service, the operator and PostgreSQL: the uid each runs as, a
read-only root filesystem, and no capability left. NetworkPolicy is enforced:
PostgreSQL accepts connections from the service and the operator only, not
from another pod of the namespace nor from another namespace. A service
container killed by the kernel for exceeding its memory limit is restarted by
the kubelet and keeps enforcing its bans.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from blacklist_devtools import images, stack
from blacklist_devtools.http import get
from blacklist_devtools.kube import Cluster, wait_until
from blacklist_devtools.network import client_address
from blacklist_devtools.stack import Deployed, get_json

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# uid, then a write to / (must fail), then the effective capabilities.
PROBE = "id -u; if touch /written 2>/dev/null; then echo writable; else echo read-only; fi; " + (
    "grep CapEff /proc/self/status"
)


def exec_in(cluster: Cluster, namespace: str, target: str, container: str, script: str) -> str:
    """Run ``sh -c script`` in a container with ``kubectl exec``; return its stdout."""
    return cluster.kubectl(
        "exec", "-n", namespace, target, "-c", container, "--", "sh", "-c", script
    )


@pytest.mark.parametrize(
    ("component", "container", "uid"),
    [("service", "service", "10001"), ("operator", "operator", "10001"),
     ("database", "postgres", "999")],
)  # fmt: skip
def test_containers_run_unprivileged_on_a_read_only_root(
    deployed: Deployed, component: str, container: str, uid: str
) -> None:
    namespace, target = {
        "service": (deployed.namespace, f"deploy/{deployed.name}"),
        "database": (deployed.namespace, f"deploy/{deployed.name}-postgres"),
        "operator": (
            deployed.operator_namespace,
            f"deploy/{deployed.release}-blacklist-operator",
        ),
    }[component]
    lines = exec_in(deployed.cluster, namespace, target, container, PROBE).split()
    assert lines[0] == uid
    assert lines[1] == "read-only"
    assert lines[2:] == ["CapEff:", "0000000000000000"]


def can_connect(cluster: Cluster, namespace: str, target: str, container: str, host: str) -> bool:
    """Whether a container opens a TCP connection to ``host``:5432 within 3 s."""
    script = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, 5432), 3).close(); print('open')\n"
        "except OSError as error:\n"
        "    print('refused', error)\n"
    )
    answer = cluster.kubectl(
        "exec", "-n", namespace, target, "-c", container, "--", "python", "-c", script
    )
    return answer.startswith("open")


def run_stranger(cluster: Cluster, namespace: str, labels: str = "app=stranger") -> str:
    """A pod of the service image with ``labels``; return its name when Ready."""
    name = f"stranger-{uuid.uuid4().hex[:6]}"
    cluster.kubectl(
        "run", name, "-n", namespace, f"--image={images.reference('service')}",
        "--image-pull-policy=IfNotPresent", f"--labels={labels}",
    )  # fmt: skip
    cluster.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace,
                    "--timeout=120s")  # fmt: skip
    return name


def test_only_the_service_and_the_operator_reach_postgres(
    deployed: Deployed, other_namespace: str
) -> None:
    cluster = deployed.cluster
    host = f"{deployed.name}-postgres.{deployed.namespace}.svc"
    service = f"deploy/{deployed.name}"
    operator = f"deploy/{deployed.release}-blacklist-operator"
    assert can_connect(cluster, deployed.namespace, service, "service", host)
    assert can_connect(cluster, deployed.operator_namespace, operator, "operator", host)
    same_namespace = run_stranger(cluster, deployed.namespace)
    try:
        assert not can_connect(cluster, deployed.namespace, same_namespace, same_namespace, host)
    finally:
        cluster.kubectl("delete", "pod", same_namespace, "-n", deployed.namespace, "--wait=false")
    elsewhere = run_stranger(cluster, other_namespace)
    assert not can_connect(cluster, other_namespace, elsewhere, elsewhere, host)
    # Another team's pod that wears the operator's label is still not the operator.
    impostor = run_stranger(cluster, other_namespace, "app.kubernetes.io/name=blacklist-operator")
    assert not can_connect(cluster, other_namespace, impostor, impostor, host)


def service_pods(deployed: Deployed) -> list[dict[str, Any]]:
    """The service's live pods."""
    selector = f"app.kubernetes.io/instance={deployed.name},app.kubernetes.io/component=service"
    listed = get_json(deployed.cluster, "pods", "-n", deployed.namespace, "-l", selector)
    return [pod for pod in listed["items"] if not pod["metadata"].get("deletionTimestamp")]


def set_memory_limit(deployed: Deployed, limit: str) -> None:
    """Set ``spec.resources.limits.memory`` of the BlacklistService."""
    patch = {"spec": {"resources": {"requests": {"cpu": "50m", "memory": "16Mi"},
                                    "limits": {"memory": limit}}}}  # fmt: skip
    deployed.cluster.kubectl(
        "patch", "blacklistservice", deployed.name, "-n", deployed.namespace,
        "--type=merge", "-p", json.dumps(patch),
    )  # fmt: skip


def test_a_service_over_its_memory_limit_is_oom_killed_and_bans_survive(
    deployed: Deployed,
) -> None:
    urls = list(deployed.instance().service_urls)
    banned = client_address(700)
    assert get(f"{urls[0]}/blacklisted", source=banned).status == 444
    assert wait_until(
        lambda: all(get(f"{url}/?n=1", source=banned).status == 403 for url in urls), timeout=10
    )
    # Below the service's working set: the kernel kills it as it starts, the kubelet
    # restarts it, and the rollout waits while the old replicas go on serving.
    set_memory_limit(deployed, "24Mi")

    def oom_killed_and_restarted() -> bool:
        for pod in service_pods(deployed):
            for status in pod["status"].get("containerStatuses") or []:
                last = status.get("lastState", {}).get("terminated", {})
                if status["restartCount"] >= 1 and last.get("reason") == "OOMKilled":
                    return True
        return False

    try:
        assert wait_until(oom_killed_and_restarted, timeout=180, interval=0.5), json.dumps(
            [pod["status"] for pod in service_pods(deployed)], indent=1
        )
        for url in urls:
            assert get(f"{url}/?n=1", source=banned).status == 403
    finally:
        set_memory_limit(deployed, "256Mi")
    stack.wait_ready(deployed.cluster, deployed.namespace, deployed.name, 240)
    for url in deployed.instance().service_urls:
        assert get(f"{url}/?n=1", source=banned).status == 403


def test_workers_follow_the_container_limits_and_spec_workers(deployed: Deployed) -> None:
    def patch(spec: dict[str, Any]) -> None:
        deployed.cluster.kubectl(
            "patch", "blacklistservice", deployed.name, "-n", deployed.namespace,
            "--type=merge", "-p", json.dumps({"spec": spec}),
        )  # fmt: skip

    def started_with(text: str) -> bool:
        pods = service_pods(deployed)
        return len(pods) == 2 and all(
            text in deployed.cluster.kubectl("logs", pod["metadata"]["name"], "-n",
                                             deployed.namespace, check=False)
            for pod in pods
        )  # fmt: skip

    # A CPU limit of 1 gives 2 workers (the floor), but 160Mi holds only one of 80 MiB
    # above the base: the memory limit wins, whatever the node's CPU count.
    limits = {"requests": {"cpu": "50m", "memory": "64Mi"},
              "limits": {"cpu": "1", "memory": "160Mi"}}  # fmt: skip
    patch({"resources": limits})
    try:
        assert wait_until(lambda: started_with("with 1 worker(s): CPU limit 1"), timeout=180)
        stack.wait_ready(deployed.cluster, deployed.namespace, deployed.name, 240)
        # An explicit spec.workers wins.
        patch({"workers": 3})
        assert wait_until(lambda: started_with("with 3 worker(s): WEB_CONCURRENCY=3"), 180)
    finally:
        defaults = {"requests": {"cpu": "50m", "memory": "64Mi"},
                    "limits": {"cpu": None, "memory": "256Mi"}}  # fmt: skip
        patch({"workers": None, "resources": defaults})
    stack.wait_ready(deployed.cluster, deployed.namespace, deployed.name, 240)
