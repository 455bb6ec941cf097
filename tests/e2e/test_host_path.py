"""hostPath storage on the real node: the operator chooses each resource's directory.

The operator is this tree's, run as a local process (``tests/operator/helpers.py``)
with ``--allowed-host-path-prefix``; the database runs on the node as a pod of
the local PostgreSQL image (uid 999) on ``PREFIX/NS/N``, a directory the kubelet
creates as root, which the ``own-data`` init container (the admin's image, from
``--host-path-init-image``) hands to that uid. The tenant's ``hostPath`` only
picks the prefix: naming the prefix itself, another resource's directory, or a
path through a symlink a tenant made gives nothing but the resource's own directory.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from blacklist_devtools import network
from blacklist_devtools.kube import Cluster, wait_until
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    hit_blacklisted,
    install_crd,
    ledger_addresses,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.testbed]


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    """The one directory of the node this test's operator allows hostPath volumes in."""
    directory = tmp_path / "allowed"
    directory.mkdir()
    return directory


@pytest.fixture
def operator(
    cluster: Cluster, namespace: str, tmp_path: Path, allowed: Path
) -> Iterator[OperatorProcess]:
    """This tree's operator, watching only this test's namespaces (``NS`` and ``NS-*``)."""
    install_crd(cluster)
    process = OperatorProcess(
        cluster,
        tmp_path,
        f"--allowed-host-path-prefix={allowed}",
        f"--namespace={namespace}",
        f"--namespace={namespace}-*",
    )
    process.start()
    yield process
    process.stop()


def ready(cluster: Cluster, namespace: str, name: str) -> bool:
    body = get_json(cluster, "bls", name, "-n", namespace)
    return condition(body, "Ready").get("status") == "True"


def test_a_host_path_ledger_survives_its_database_pod(
    operator: OperatorProcess, namespace: str, allowed: Path
) -> None:
    cluster = operator.cluster
    storage = {"hostPath": str(allowed / "ledger"), "size": "256Mi"}
    apply_manifest(cluster, blacklist_service("hp", namespace, database={"storage": storage}))
    wait_for(lambda: ready(cluster, namespace, "hp"), 180, "Ready on a hostPath", operator)
    # Not the path named: the operator's PREFIX/NS/N, made by the kubelet, handed to 999.
    assert not (allowed / "ledger").exists()
    assert (allowed / namespace / "hp").stat().st_uid == 999
    source = network.client_address(zlib.crc32(namespace.encode()) % 20000)
    wait_for(lambda: hit_blacklisted(cluster, namespace, "hp", source), 30, "a 444")
    if not wait_until(lambda: ledger_addresses(cluster, namespace, "hp") == [source], 60, 0.5):
        pytest.fail(f"no ledger row; the ledger holds {ledger_addresses(cluster, namespace, 'hp')}")

    database = "app.kubernetes.io/instance=hp,app.kubernetes.io/component=database"
    cluster.kubectl("delete", "pod", "-n", namespace, "-l", database, "--wait=true")
    wait_for(
        lambda: ledger_addresses(cluster, namespace, "hp") == [source],
        120,
        "the row, read from the new database pod",
        operator,
    )
    cluster.kubectl("delete", "bls", "hp", "-n", namespace, "--wait=true", "--timeout=60s")


def test_a_host_path_outside_the_allowed_prefixes_is_refused(
    operator: OperatorProcess, namespace: str, allowed: Path
) -> None:
    cluster = operator.cluster
    # A sibling whose name starts like the allowed directory: prefixes are whole components.
    refused = f"{allowed}-not/pg"
    storage = {"hostPath": refused}
    apply_manifest(cluster, blacklist_service("far", namespace, database={"storage": storage}))

    def invalid() -> bool:
        found = condition(get_json(cluster, "bls", "far", "-n", namespace), "Ready")
        return found.get("reason") == "InvalidSpec"

    wait_for(invalid, 30, "Ready=False InvalidSpec", operator)
    found = condition(get_json(cluster, "bls", "far", "-n", namespace), "Ready")
    assert found["status"] == "False"
    assert "spec.database.storage.hostPath" in found["message"]
    assert str(allowed) in found["message"]
    assert get_json(cluster, "pvc", "far-postgres", "-n", namespace) is None
    volumes = json.loads(
        cluster.kubectl("get", "pv", "-l", "app.kubernetes.io/instance=far", "-o", "json")
    )["items"]
    assert not [
        v for v in volumes if v["metadata"]["labels"].get("blacklist.dev/namespace") == namespace
    ]
    events = json.loads(
        cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "reason=InvalidSpec", "-o", "json"
        )
    )["items"]
    assert any(event["type"] == "Warning" for event in events)
    # Deleted while the operator runs: it holds the finalizer of a hostPath resource.
    cluster.kubectl("delete", "bls", "far", "-n", namespace, "--wait=true", "--timeout=60s")


def test_resources_naming_one_directory_get_their_own_volumes(
    operator: OperatorProcess, namespace: str, allowed: Path
) -> None:
    cluster = operator.cluster
    # NS "<ns>-a" / N "db" and NS "<ns>" / N "a-db": both were "<ns>-a-db-postgres"; and
    # both name the same directory, the first one the prefix itself.
    other = f"{namespace}-a"
    cluster.kubectl("create", "namespace", other)
    try:
        for where, name in ((other, "db"), (namespace, "a-db")):
            named = allowed if where == other else allowed / "shared"
            storage = {"hostPath": str(named), "size": "64Mi"}
            apply_manifest(
                cluster, blacklist_service(name, where, replicas=0, database={"storage": storage})
            )

        def bound(where: str, name: str) -> dict[str, str] | None:
            claim = get_json(cluster, "pvc", f"{name}-postgres", "-n", where)
            if claim is None or (claim.get("status") or {}).get("phase") != "Bound":
                return None
            volume = get_json(cluster, "pv", claim["spec"]["volumeName"])
            assert volume is not None
            return {
                "name": volume["metadata"]["name"],
                "path": volume["spec"]["hostPath"]["path"],
                "owner": volume["metadata"]["annotations"]["blacklist.dev/owner"],
            }

        wait_for(lambda: bound(other, "db") is not None, 60, "the first claim bound", operator)
        wait_for(
            lambda: bound(namespace, "a-db") is not None, 60, "the second claim bound", operator
        )
        first, second = bound(other, "db"), bound(namespace, "a-db")
        assert first is not None
        assert second is not None
        assert first["name"] != second["name"]
        assert (first["owner"], first["path"]) == (f"{other}/db", str(allowed / other / "db"))
        assert (second["owner"], second["path"]) == (
            f"{namespace}/a-db",
            str(allowed / namespace / "a-db"),
        )
        # The resource that named the prefix got its own directory; the prefix stays the admin's.
        first_directory = allowed / other / "db"
        wait_for(
            lambda: first_directory.exists() and first_directory.stat().st_uid == 999,
            120,
            f"{first_directory} handed to PostgreSQL",
            operator,
        )
        assert allowed.stat().st_uid == os.getuid()
        for where, name in ((other, "db"), (namespace, "a-db")):
            cluster.kubectl("delete", "bls", name, "-n", where, "--wait=true", "--timeout=60s")
        # Each deletion released its own volume only.
        for volume in (first, second):
            wait_for(
                lambda volume=volume: get_json(cluster, "pv", volume["name"]) is None,
                30,
                f"PersistentVolume {volume['name']} released",
                operator,
            )
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_a_path_through_a_tenants_symlink_reaches_nothing_but_its_own_directory(
    operator: OperatorProcess, namespace: str, allowed: Path
) -> None:
    cluster = operator.cluster
    # What a tenant's database pod (running as PostgreSQL's uid in its own directory) can
    # leave behind: a symlink to the node's root. It is made here directly on the node.
    mine = allowed / namespace / "first"
    mine.mkdir(parents=True)
    (mine / "escape").symlink_to("/")
    root_owner = os.stat("/").st_uid
    storage = {"hostPath": str(mine / "escape"), "size": "64Mi"}
    apply_manifest(cluster, blacklist_service("second", namespace, database={"storage": storage}))
    wait_for(lambda: ready(cluster, namespace, "second"), 180, "Ready on a hostPath", operator)
    claim = get_json(cluster, "pvc", "second-postgres", "-n", namespace)
    assert claim is not None
    volume = get_json(cluster, "pv", claim["spec"]["volumeName"])
    assert volume is not None
    assert volume["spec"]["hostPath"]["path"] == str(allowed / namespace / "second")
    assert (allowed / namespace / "second").stat().st_uid == 999
    # Nothing was mounted or chowned through the symlink.
    assert os.stat("/").st_uid == root_owner
    assert (mine / "escape").is_symlink()
    cluster.kubectl("delete", "bls", "second", "-n", namespace, "--wait=true", "--timeout=60s")
