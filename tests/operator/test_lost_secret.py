"""A lost Secret ``N-db`` never locks anyone out of an existing ledger, on the real node.

The database runs as a pod of the local PostgreSQL image; the operator, a local
process, reaches it through its Service's cluster address, as the service pods do.
"""

from __future__ import annotations

import json
import zlib

import pytest

from blacklist_devtools import network
from blacklist_devtools.kube import Cluster
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    database_credentials,
    get_json,
    hit_blacklisted,
    ledger_addresses,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def credentials(cluster: Cluster, namespace: str) -> tuple[str, str] | None:
    return database_credentials(cluster, namespace, "ledger")


def test_deleted_secret_heals_without_losing_a_row(
    operator_process: OperatorProcess, namespace: str
) -> None:
    cluster = operator_process.cluster
    apply_manifest(cluster, blacklist_service("ledger", namespace))
    service = None

    def database_service() -> bool:
        nonlocal service
        service = get_json(cluster, "service", "ledger-postgres", "-n", namespace)
        return service is not None

    wait_for(database_service, 30, "Service ledger-postgres", operator_process)
    assert service is not None
    operator_process.map_database(namespace, "ledger", service["spec"]["clusterIP"], 5432)

    def ready(condition_type: str) -> bool:
        body = get_json(cluster, "bls", "ledger", "-n", namespace)
        return condition(body, condition_type).get("status") == "True"

    wait_for(lambda: ready("Ready"), 120, "Ready", operator_process)
    offset = zlib.crc32(namespace.encode()) % 20000
    first, second = network.client_address(offset), network.client_address(offset + 1)
    wait_for(lambda: hit_blacklisted(cluster, namespace, "ledger", first), 30, "a first 444")
    wait_for(
        lambda: (ledger_addresses(cluster, namespace, "ledger") or []) == [first],
        60,
        "the first row",
    )
    wait_for(lambda: ready("DatabaseReady"), 60, "DatabaseReady", operator_process)
    old_password = credentials(cluster, namespace)

    # The Secret is lost, then the database restarts (a rollout, a node drain): the point
    # where a regenerated password used to lock everyone out. A rollout (Recreate) rather
    # than a deleted pod, whose replacement may start before it has stopped.
    cluster.kubectl("delete", "secret", "ledger-db", "-n", namespace)
    cluster.kubectl("rollout", "restart", "deployment/ledger-postgres", "-n", namespace)

    def regenerated() -> bool:
        found = credentials(cluster, namespace)
        return found is not None and found != old_password

    wait_for(regenerated, 60, "Secret ledger-db generated again", operator_process)

    def warned() -> bool:
        events = json.loads(
            cluster.kubectl(
                "get",
                "events",
                "-n",
                namespace,
                "--field-selector",
                "reason=CredentialsRegenerated",
                "-o",
                "json",
            )
        )["items"]
        return any(event["type"] == "Warning" for event in events)

    wait_for(warned, 30, "a CredentialsRegenerated Warning", operator_process)
    # The rows are there, under the new password.
    wait_for(
        lambda: (ledger_addresses(cluster, namespace, "ledger") or []) == [first],
        120,
        "the old row, read with the new password",
        operator_process,
    )
    wait_for(lambda: ready("Ready"), 120, "Ready again", operator_process)

    # The service (its pods restarted onto the new Secret) still writes to the ledger.
    wait_for(lambda: hit_blacklisted(cluster, namespace, "ledger", second), 60, "a second 444")
    wait_for(
        lambda: ledger_addresses(cluster, namespace, "ledger") == [first, second],
        60,
        "the second row",
        operator_process,
    )

    # The operator still reads it: both addresses reach the ban list.
    def banned() -> bool:
        body = get_json(cluster, "bls", "ledger", "-n", namespace)
        status = (body or {}).get("status") or {}
        return ready("DatabaseReady") and status.get("bannedCount") == 2

    wait_for(banned, 60, "DatabaseReady and bannedCount 2", operator_process)


def test_retain_on_delete_set_later_keeps_the_secret(
    operator_process: OperatorProcess, namespace: str
) -> None:
    cluster = operator_process.cluster
    apply_manifest(cluster, blacklist_service("later", namespace))
    wait_for(
        lambda: get_json(cluster, "secret", "later-db", "-n", namespace) is not None,
        30,
        "Secret later-db",
        operator_process,
    )
    secret = get_json(cluster, "secret", "later-db", "-n", namespace)
    assert secret is not None
    assert secret["metadata"]["ownerReferences"]
    storage = {"retainOnDelete": True}
    apply_manifest(cluster, blacklist_service("later", namespace, database={"storage": storage}))

    def released() -> bool:
        found = get_json(cluster, "secret", "later-db", "-n", namespace)
        return found is not None and not found["metadata"].get("ownerReferences")

    wait_for(released, 30, "the Secret's owner reference removed", operator_process)
    cluster.kubectl("delete", "bls", "later", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: get_json(cluster, "deployment", "later-postgres", "-n", namespace) is None,
        60,
        "the Deployment collected",
    )
    kept = get_json(cluster, "secret", "later-db", "-n", namespace)
    assert kept is not None
    assert kept["data"] == secret["data"]
    assert get_json(cluster, "pvc", "later-postgres", "-n", namespace) is not None
