"""``spec.database.external`` against the control plane: a real PostgreSQL as the external database.

The operator runs as a process beside the test's PostgreSQL, which the Secret
names directly (no address map): no bundled database child is made, the ban
list syncs from the external ledger and survives a restart of that database,
and an unusable Secret is a ``DatabaseSecretInvalid`` condition that heals.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import pytest

from blacklist_devtools.postgres import PostgresServer
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    wait_for,
)
from tests.operator.test_banlist_sync import banned_entries, create_table, insert

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def ledger(postgres: PostgresServer) -> PostgresServer:
    """The module's PostgreSQL, running, without a ledger table."""
    postgres.start()
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_ledger")
    return postgres


def put_secret(operator: OperatorProcess, namespace: str, **values: str) -> None:
    """Secret ``pg`` with ``values`` (replacing any earlier one's keys)."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pg", "namespace": namespace},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
    }
    operator.cluster.kubectl("delete", "secret", "pg", "-n", namespace, "--ignore-not-found")
    apply_manifest(operator.cluster, secret)


def keys_of(postgres: PostgresServer) -> dict[str, str]:
    return {
        "host": postgres.host,
        "port": str(postgres.port),
        "username": postgres.user,
        "password": postgres.password,
        "dbname": postgres.database,
    }


def deploy_external(
    operator: OperatorProcess, namespace: str, replicas: int = 1, **external: Any
) -> None:
    database = {"external": {"secretRef": {"name": "pg"}, **external}}
    manifest = blacklist_service("bl", namespace, replicas=replicas, database=database)
    apply_manifest(operator.cluster, manifest)


def status(operator: OperatorProcess, namespace: str) -> dict[str, Any]:
    return get_json(operator.cluster, "bls", "bl", "-n", namespace) or {}


def wait_for_condition(
    operator: OperatorProcess, namespace: str, kind: str, reason: str, timeout: float = 30
) -> dict[str, Any]:
    def reached() -> bool:
        return condition(status(operator, namespace), kind).get("reason") == reason

    wait_for(reached, timeout, f"{kind} with reason {reason}", operator)
    return condition(status(operator, namespace), kind)


def wait_for_object(operator: OperatorProcess, namespace: str, kind: str, name: str) -> Any:
    """The object, once the reconcile (independent of the ban sync) has applied it."""
    wait_for(
        lambda: get_json(operator.cluster, kind, name, "-n", namespace) is not None,
        30,
        f"{kind} {name}",
        operator,
    )
    return get_json(operator.cluster, kind, name, "-n", namespace)


def wait_for_ban(
    operator: OperatorProcess, namespace: str, address: str, timeout: float = 20
) -> float:
    """Seconds until ``address`` is in the ban list."""
    started = time.monotonic()
    wait_for(
        lambda: address in banned_entries(operator, namespace),
        timeout,
        f"{address} banned",
        operator,
    )
    return time.monotonic() - started


def test_ban_list_syncs_from_an_external_database_and_survives_its_restart(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    put_secret(operator_process, namespace, **keys_of(ledger))
    deploy_external(operator_process, namespace, sslmode="disable")
    wait_for_condition(operator_process, namespace, "BanListSynced", "LedgerNotCreated")
    database = condition(status(operator_process, namespace), "DatabaseReady")
    assert database["status"] == "True"
    assert f"{ledger.host}:{ledger.port}/{ledger.database}" in database["message"]

    cluster = operator_process.cluster
    # Deployment N is applied after every database child the reconcile would make.
    deployment = wait_for_object(operator_process, namespace, "deployment", "bl")
    for kind, name in (
        ("deployment", "bl-postgres"),
        ("service", "bl-postgres"),
        ("persistentvolumeclaim", "bl-postgres"),
        ("networkpolicy", "bl-postgres"),
        ("secret", "bl-db"),
    ):
        assert get_json(cluster, kind, name, "-n", namespace) is None, f"{kind} {name}"
    settings = get_json(cluster, "configmap", "bl-db", "-n", namespace)
    assert settings is not None
    assert settings["data"] == {
        "host": ledger.host,
        "port": str(ledger.port),
        "database": ledger.database,
        "sslmode": "disable",
    }
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "password"}
    assert ledger.password not in str(deployment)

    create_table(ledger)
    insert(ledger, ["203.0.113.7"])
    assert wait_for_ban(operator_process, namespace, "203.0.113.7") < 5

    # The external database restarts at the same address: the sync reconnects by itself.
    ledger.stop()
    wait_for_condition(operator_process, namespace, "DatabaseReady", "Unreachable")
    ledger.start()
    restarted = time.monotonic()
    insert(ledger, ["203.0.113.8"])
    wait_for_ban(operator_process, namespace, "203.0.113.8", timeout=30)
    resumed = time.monotonic() - restarted
    logging.getLogger(__name__).info("ban sync resumed %.2f s after the restart", resumed)
    assert resumed < 10, f"the ban sync resumed {resumed:.1f} s after the restart"
    wait_for_condition(operator_process, namespace, "DatabaseReady", "Connected")
    assert {"203.0.113.7", "203.0.113.8"} <= set(banned_entries(operator_process, namespace))


def test_a_url_secret_is_followed(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    url = (
        f"postgresql://{ledger.user}:{ledger.password}@{ledger.host}:{ledger.port}"
        f"/{ledger.database}?sslmode=disable"
    )
    put_secret(operator_process, namespace, url=url)
    deploy_external(operator_process, namespace)
    create_table(ledger)
    insert(ledger, ["198.51.100.9"])
    wait_for_ban(operator_process, namespace, "198.51.100.9", timeout=30)
    deployment = wait_for_object(operator_process, namespace, "deployment", "bl")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "url"}
    assert env["PGSSLMODE"]["value"] == "disable"


def test_an_unusable_secret_is_reported_and_retried(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    deploy_external(operator_process, namespace, sslmode="disable")
    ready = wait_for_condition(operator_process, namespace, "Ready", "DatabaseSecretInvalid")
    assert "Secret pg" in ready["message"]
    assert "not found" in ready["message"]
    synced = wait_for_condition(
        operator_process, namespace, "DatabaseReady", "DatabaseSecretInvalid"
    )
    assert synced["status"] == "False"
    cluster = operator_process.cluster
    assert get_json(cluster, "deployment", "bl", "-n", namespace) is None
    assert get_json(cluster, "deployment", "bl-postgres", "-n", namespace) is None

    incomplete = {key: value for key, value in keys_of(ledger).items() if key != "password"}
    put_secret(operator_process, namespace, **incomplete)

    def names_the_key() -> bool:
        message = condition(status(operator_process, namespace), "Ready").get("message", "")
        return "password missing" in message

    wait_for(names_the_key, 30, "Ready naming the missing key", operator_process)

    # Fixed: the next retry (no change of the resource needed) builds the service.
    put_secret(operator_process, namespace, **keys_of(ledger))
    wait_for_object(operator_process, namespace, "deployment", "bl")
    wait_for(
        lambda: (
            condition(status(operator_process, namespace), "Ready").get("reason")
            != "DatabaseSecretInvalid"
        ),
        30,
        "Ready no longer DatabaseSecretInvalid",
        operator_process,
    )
    wait_for_condition(operator_process, namespace, "DatabaseReady", "Connected")
    assert get_json(cluster, "secret", "bl-db", "-n", namespace) is None


def test_an_edited_secret_rolls_the_service_pods(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    put_secret(operator_process, namespace, **keys_of(ledger))
    # No pods: nothing else (a pod's availability changing) wakes a reconcile meanwhile.
    deploy_external(operator_process, namespace, replicas=0, sslmode="disable")
    wait_for_condition(operator_process, namespace, "DatabaseReady", "Connected")

    def checksum() -> str | None:
        deployment = get_json(operator_process.cluster, "deployment", "bl", "-n", namespace)
        template = ((deployment or {}).get("spec") or {}).get("template") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        value = annotations.get("blacklist.dev/database-secret-checksum")
        return str(value) if value is not None else None

    wait_for(lambda: checksum() is not None, 30, "the Secret's checksum", operator_process)
    before = checksum()
    # An edit in place (same Secret, new data), with no change of the resource.
    encoded = base64.b64encode(b"5432").decode()
    operator_process.cluster.kubectl(
        "patch", "secret", "pg", "-n", namespace, "--type=merge",
        "-p", f'{{"data": {{"port": "{encoded}", "rotated": "{encoded}"}}}}',
    )  # fmt: skip
    edited = time.monotonic()
    wait_for(lambda: checksum() not in (None, before), 60, "the pods rolled", operator_process)
    # The ban sync looks at the Secret every 30 s; the resync would take 5 minutes.
    assert time.monotonic() - edited < 45
