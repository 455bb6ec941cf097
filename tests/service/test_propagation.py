"""Two replicas and the real control plane: a ban made on one holds on the other within 2 s.

The test plays the operator: it creates the ban-list ConfigMap and the
replicas' ServiceAccount with a Role limited to the 16 shard names
(docs/CONTRACTS.md), then copies each ledger row's address into the ConfigMap
as soon as it lands. The replicas watch the ConfigMap with the account's token.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from functools import partial
from pathlib import Path

import pytest
from kubernetes import client

from blacklist_devtools.http import get
from blacklist_devtools.kube import Cluster, wait_until
from blacklist_devtools.postgres import PostgresServer
from tests.service.conftest import ledger_addresses
from tests.service.processes import ServiceFactory, ServiceProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]

NAME = "bls"
BANLIST = f"{NAME}-banlist"
SHARDS = [BANLIST] + [f"{BANLIST}-{index}" for index in range(1, 16)]


def rbac(namespace: str) -> str:
    """ServiceAccount, Role (read the shards, nothing else) and RoleBinding, as JSON list."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME}},
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": NAME},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "resources": ["configmaps"],
                            "resourceNames": SHARDS,
                            "verbs": ["get", "list", "watch"],
                        }
                    ],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": NAME},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": NAME,
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
                },
            ],
        }
    )


def service_account_dir(cluster: Cluster, namespace: str, directory: Path) -> Path:
    """A directory laid out like a pod's ServiceAccount mount, with a TokenRequest token."""
    directory.mkdir()
    token = cluster.kubectl("create", "token", NAME, "-n", namespace, "--duration=1h").strip()
    (directory / "token").write_text(token)
    kubeconfig = json.loads(cluster.kubeconfig.read_text())
    authority = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
    (directory / "ca.crt").write_bytes(base64.b64decode(authority))
    (directory / "namespace").write_text(namespace)
    return directory


def write_shard(core: client.CoreV1Api, namespace: str, name: str, data: dict[str, str]) -> None:
    """Create or replace the data of one shard, as the operator does."""
    body = {"metadata": {"name": name}, "data": data}
    try:
        core.patch_namespaced_config_map(name, namespace, body)
    except client.ApiException as error:
        if error.status != 404:
            raise
        core.create_namespaced_config_map(namespace, body)


def ready(service: ServiceProcess) -> bool:
    return get(f"{service.url}/readyz").status == 200


def refused_everywhere(service: ServiceProcess, source: str) -> bool:
    # Several fresh connections, so both workers of the replica are asked.
    return all(get(f"{service.url}/?n=2", source=source).status == 403 for _ in range(4))


def test_a_ban_on_one_replica_holds_on_the_other_within_two_seconds(
    cluster: Cluster,
    namespace: str,
    postgres: PostgresServer,
    service_factory: ServiceFactory,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(cluster.api_client())
    write_shard(core, namespace, BANLIST, {"addresses": "", "shards": "1", "count": "0"})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=rbac(namespace))
    account = service_account_dir(cluster, namespace, tmp_path / "serviceaccount")
    api = urllib.parse.urlsplit(cluster.server)
    environment = {
        "DATABASE_URL": postgres.url,
        "SERVICE_ACCOUNT_DIR": str(account),
        "KUBERNETES_SERVICE_HOST": str(api.hostname),
        "KUBERNETES_SERVICE_PORT": str(api.port),
        "BANLIST_CONFIGMAP": BANLIST,
        "POD_NAMESPACE": namespace,
    }
    first, second = service_factory(**environment), service_factory(**environment)
    for replica in (first, second):
        assert wait_until(partial(ready, replica), timeout=30), replica.log()

    banned, bystander = "127.0.2.1", "127.0.2.2"
    hit_at = time.monotonic()
    assert get(f"{first.url}/blacklisted", source=banned).status == 444
    assert wait_until(lambda: banned in ledger_addresses(postgres), timeout=2.0, interval=0.02)
    write_shard(core, namespace, BANLIST, {"addresses": f"{banned}\n", "shards": "1", "count": "1"})
    assert wait_until(lambda: refused_everywhere(second, banned), timeout=2.0, interval=0.02), (
        second.log()
    )
    elapsed = time.monotonic() - hit_at
    assert elapsed <= 2.0, f"the ban reached the second replica after {elapsed:.2f} s"
    assert get(f"{second.url}/?n=3", source=bystander).body == "9.0"

    # A ban list that grows past one ConfigMap: the replicas follow the new shard too.
    other = "127.0.2.3"
    write_shard(core, namespace, f"{BANLIST}-1", {"addresses": f"{other}\n"})
    write_shard(core, namespace, BANLIST, {"addresses": f"{banned}\n", "shards": "2", "count": "2"})
    for replica in (first, second):
        assert wait_until(partial(refused_everywhere, replica, other), timeout=5.0)
    assert get(f"{first.url}/?n=3", source=bystander).status == 200
