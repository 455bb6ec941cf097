"""The operator's JSON log at DEBUG, against the control plane: well formed, and without a secret.

An operator run with ``--log-level debug --log-format json`` reconciles a
BlacklistService whose external database is given as a URL carrying its
password, and whose mail credentials are in a Secret, and syncs a ban from that
database; its ``spec.logFormat: json`` becomes the service's ``LOG_FORMAT``.
Every line of the operator's log is a JSON object with the service's keys; the
lines about the resource name it; and neither password appears anywhere in the
log, in any form.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from blacklist_devtools.kube import Cluster
from blacklist_devtools.postgres import PostgresServer
from tests.conftest import module_namespaces
from tests.operator.helpers import OperatorProcess, apply_manifest, blacklist_service
from tests.operator.test_banlist_sync import create_table, insert
from tests.operator.test_external_database_sync import put_secret, wait_for_ban, wait_for_object

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]

# The secret the log must not show.
MAIL_PASSWORD = "mail-Secret-7f3b9c"


@pytest.fixture(scope="module")
def operator_process(
    crd: Cluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """This module's operator, logging everything as JSON."""
    operator = OperatorProcess(
        crd,
        tmp_path_factory.mktemp("operator"),
        "--namespace",
        module_namespaces(request.module.__name__),
        "--log-level",
        "debug",
        "--log-format",
        "json",
    ).start()
    yield operator
    operator.stop()


def mail_secret(namespace: str) -> dict[str, Any]:
    values = {"username": "alerts", "password": MAIL_PASSWORD}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "smtp", "namespace": namespace},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
    }


def test_debug_json_log_names_the_resource_and_holds_no_secret(
    operator_process: OperatorProcess, postgres: PostgresServer, namespace: str
) -> None:
    url = (
        f"postgresql://{postgres.user}:{postgres.password}@{postgres.host}:{postgres.port}"
        f"/{postgres.database}?sslmode=disable"
    )
    put_secret(operator_process, namespace, url=url)
    apply_manifest(operator_process.cluster, mail_secret(namespace))
    mail = {"host": "smtp.example", "port": 2525, "tls": True, "secretRef": {"name": "smtp"}}
    database = {"external": {"secretRef": {"name": "pg"}}}
    manifest = blacklist_service("bl", namespace, mail=mail, database=database, logFormat="json")
    apply_manifest(operator_process.cluster, manifest)
    create_table(postgres)
    insert(postgres, ["198.51.100.23"])
    wait_for_ban(operator_process, namespace, "198.51.100.23", timeout=30)
    deployment = wait_for_object(operator_process, namespace, "deployment", "bl")
    # spec.logFormat, accepted by the CRD, reaches the service's environment.
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "LOG_FORMAT", "value": "json"} in container["env"]

    log = operator_process.log()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
    assert any(line["level"] == "DEBUG" for line in lines)
    about = [line for line in lines if line.get("namespace") == namespace]
    assert about, "no line names the resource's namespace"
    assert all(line.get("name") for line in about)
    # kopf's per-object lines, and ours from the work queue and the ban sync.
    assert any(line["logger"] == "kopf.objects" for line in about)
    assert any(line["message"].startswith("Created Deployment") for line in about)
    assert any(line["message"].startswith("Ban sync of") for line in about)
    assert all(line["name"] == "bl" for line in about)
    for secret in (postgres.password, MAIL_PASSWORD):
        for form in {
            secret,
            urllib.parse.quote(secret),
            base64.b64encode(secret.encode()).decode(),
        }:
            assert form not in log, f"a secret is in the operator's log: {form[:3]}..."
