"""The deployed product under faults: the operator killed mid-reconcile, the API server restarted.

Each test breaks something under a running deployment (chart, operator, two
replicas, PostgreSQL, all containers on the local node) and checks that it
converges and that no ban is lost.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import node, stack
from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.network import client_address
from blacklist_devtools.stack import Deployed

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.testbed]


def operator_pids(deployed: Deployed) -> list[int]:
    """Host PIDs of the operator's running container (the kubelet restarts it when it dies)."""
    return node.container_pids(
        local_cluster.LOCAL_DIR, local_cluster.binary("crictl"),
        deployed.operator_namespace, "operator",
    )  # fmt: skip


def refused_everywhere(urls: list[str], source: str) -> bool:
    return all(get(f"{url}/?n=1", source=source).status == 403 for url in urls)


def test_operator_killed_mid_reconcile_converges(deployed: Deployed) -> None:
    cluster = deployed.cluster
    # The chart runs two operator replicas (one leader): kill both, the leader and its standby.
    killed = operator_pids(deployed)
    assert len(killed) == 2, killed
    patch = json.dumps({"spec": {"replicas": 3}})
    cluster.kubectl(
        "patch", "blacklistservice", deployed.name, "-n", deployed.namespace,
        "--type=merge", "-p", patch,
    )  # fmt: skip
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    assert wait_until(
        lambda: bool(operator_pids(deployed)) and not set(operator_pids(deployed)) & set(killed),
        timeout=120,
        interval=0.2,
    )
    resource = stack.wait_ready(cluster, deployed.namespace, deployed.name, 120)
    assert resource["status"]["observedGeneration"] == resource["metadata"]["generation"]
    deployments = stack.get_json(
        cluster, "deployments", "-n", deployed.namespace,
        "-l", f"app.kubernetes.io/instance={deployed.name}",
    )["items"]  # fmt: skip
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(
        [deployed.name, f"{deployed.name}-postgres"]
    )
    urls = list(deployed.instance().service_urls)
    assert len(urls) == 3
    source = client_address(501)
    assert get(f"{urls[0]}/blacklisted", source=source).status == 444
    assert wait_until(lambda: refused_everywhere(urls, source), timeout=5, interval=0.05)


def test_api_server_restart_loses_no_ban(deployed: Deployed) -> None:
    urls = list(deployed.instance().service_urls)
    before, during = client_address(502), client_address(503)
    assert get(f"{urls[0]}/blacklisted", source=before).status == 444
    assert wait_until(lambda: refused_everywhere(urls, before), timeout=5, interval=0.05)

    def ban_while_the_api_is_down() -> None:
        assert get(f"{urls[0]}/blacklisted", source=during).status == 444
        assert get(f"{urls[0]}/?n=1", source=during).status == 403

    local_cluster.restart("kube-apiserver", while_down=ban_while_the_api_is_down)
    # The operator and every replica's watch reconnect; then the ban made while the
    # API was down reaches the other replicas and the status.
    assert wait_until(lambda: refused_everywhere(urls, during), timeout=60, interval=0.1)
    assert refused_everywhere(urls, before)

    def counted() -> bool:
        count = deployed.resource().get("status", {}).get("bannedCount", 0)
        return int(count) >= 2

    assert wait_until(counted, timeout=60)
