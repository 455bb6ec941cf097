"""An external database served over TLS, verified with a CA from a ConfigMap, on the control plane.

The operator runs as a process beside a PostgreSQL serving TLS with a certificate
for ``127.0.0.1`` signed by a CA of the test. The resource's Secret gives a ``url``
with ``sslmode=verify-full`` and ``caConfigMapRef`` names the CA: until the
ConfigMap exists the resource is ``DatabaseSecretInvalid`` naming it; then the
ban list syncs over a verified TLS connection, the service's pods mount the CA;
with another CA in the ConfigMap the operator refuses the server after it restarts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from blacklist_devtools.pki import create_server_pki
from blacklist_devtools.postgres import PostgresServer
from tests.operator.helpers import OperatorProcess, apply_manifest, condition, get_json
from tests.operator.test_banlist_sync import create_table, insert
from tests.operator.test_external_database_sync import (
    deploy_external,
    put_secret,
    status,
    wait_for_ban,
    wait_for_condition,
    wait_for_object,
)

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The server's CA directory, and another CA's directory."""
    server = tmp_path_factory.mktemp("database-pki")
    create_server_pki(server, "ledger-db", ("IP:127.0.0.1",))
    other = tmp_path_factory.mktemp("other-pki")
    create_server_pki(other, "ledger-db", ("IP:127.0.0.1",))
    return server, other


@pytest.fixture(scope="module")
def tls_ledger(pki: tuple[Path, Path]) -> Iterator[PostgresServer]:
    with PostgresServer(tls_dir=pki[0]) as server:
        create_table(server)
        yield server


def put_ca(operator: OperatorProcess, namespace: str, certificate: str) -> None:
    operator.cluster.kubectl("delete", "configmap", "pg-ca", "-n", namespace, "--ignore-not-found")
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "pg-ca", "namespace": namespace},
        "data": {"ca.crt": certificate},
    }
    apply_manifest(operator.cluster, config_map)


def operator_sessions_use_tls(ledger: PostgresServer) -> list[bool]:
    with ledger.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.application_name = 'blacklist-operator'"
        )
        return [bool(row[0]) for row in cursor.fetchall()]


def test_verify_full_with_a_ca_from_a_config_map(
    operator_process: OperatorProcess,
    tls_ledger: PostgresServer,
    pki: tuple[Path, Path],
    namespace: str,
) -> None:
    url = (
        f"postgresql://{tls_ledger.user}:{tls_ledger.password}@{tls_ledger.host}:"
        f"{tls_ledger.port}/{tls_ledger.database}?sslmode=verify-full"
    )
    put_secret(operator_process, namespace, url=url)
    deploy_external(operator_process, namespace, caConfigMapRef={"name": "pg-ca", "key": "ca.crt"})
    ready = wait_for_condition(operator_process, namespace, "Ready", "DatabaseSecretInvalid")
    assert "ConfigMap pg-ca" in ready["message"]

    put_ca(operator_process, namespace, (pki[0] / "ca.crt").read_text())
    insert(tls_ledger, ["203.0.113.70"])
    wait_for_ban(operator_process, namespace, "203.0.113.70", timeout=40)
    wait_for_condition(operator_process, namespace, "DatabaseReady", "Connected")
    assert operator_sessions_use_tls(tls_ledger) == [True]

    deployment = wait_for_object(operator_process, namespace, "deployment", "bl")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["PGSSLMODE"]["value"] == "verify-full"
    assert env["PGSSLROOTCERT"]["value"] == "/etc/blacklist/database-ca/ca.crt"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "database-ca"]
    assert volume["configMap"]["name"] == "pg-ca"

    # A man in the middle's CA: the next connection (after a restart) is refused.
    put_ca(operator_process, namespace, (pki[1] / "ca.crt").read_text())
    tls_ledger.stop()
    tls_ledger.start()
    refused = wait_for_condition(operator_process, namespace, "DatabaseReady", "Unreachable", 60)
    assert refused["status"] == "False"
    assert "certificate" not in refused["message"]  # libpq's words stay in the log
    assert operator_sessions_use_tls(tls_ledger) == []
    assert condition(status(operator_process, namespace), "DatabaseReady")["status"] == "False"
    assert get_json(operator_process.cluster, "configmap", "pg-ca", "-n", namespace) is not None
