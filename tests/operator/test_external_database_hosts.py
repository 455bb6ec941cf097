"""An external database on a host the admin does not allow, or one that refuses: what a tenant sees.

The operator allows only the loopback address ``127.0.0.1`` here (as an admin
would allow the database network). A Secret naming another host is refused
before any connection with ``Ready=False``, reason ``DatabaseHostNotAllowed``;
and a database that refuses the connection is reported in a short, generic
``DatabaseReady`` message, libpq's own words going to the operator log only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blacklist_devtools.kube import Cluster
from blacklist_devtools.net import free_port
from blacklist_devtools.postgres import PostgresServer
from tests.conftest import module_namespaces
from tests.operator.helpers import OperatorProcess, condition, get_json, wait_for
from tests.operator.test_external_database_sync import (
    deploy_external,
    keys_of,
    put_secret,
    status,
    wait_for_condition,
)

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def operator_process(
    crd: Cluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """This module's operator, allowing external databases on 127.0.0.1 and below pg.test."""
    operator = OperatorProcess(
        crd,
        tmp_path_factory.mktemp("operator"),
        "--allowed-external-database-hosts=127.0.0.1/32,pg.test",
        "--namespace",
        module_namespaces(request.module.__name__),
    ).start()
    yield operator
    operator.stop()


def test_a_host_the_admin_does_not_allow_is_refused_before_connecting(
    operator_process: OperatorProcess, postgres: PostgresServer, namespace: str
) -> None:
    # 127.0.0.2 is the same machine's loopback: reachable, but not allowed.
    put_secret(operator_process, namespace, **{**keys_of(postgres), "host": "127.0.0.2"})
    deploy_external(operator_process, namespace, sslmode="disable")
    ready = wait_for_condition(operator_process, namespace, "Ready", "DatabaseHostNotAllowed")
    assert ready["status"] == "False"
    assert "host 127.0.0.2 is not allowed" in ready["message"]
    database = condition(status(operator_process, namespace), "DatabaseReady")
    assert database.get("reason") != "Connected"
    assert get_json(operator_process.cluster, "deployment", "bl", "-n", namespace) is None

    # The tenant moves to an allowed host: the same resource comes up by itself.
    put_secret(operator_process, namespace, **keys_of(postgres))
    wait_for_condition(operator_process, namespace, "DatabaseReady", "Connected", timeout=60)
    wait_for(
        lambda: (
            condition(status(operator_process, namespace), "Ready").get("reason")
            != "DatabaseHostNotAllowed"
        ),
        30,
        "Ready no longer DatabaseHostNotAllowed",
        operator_process,
    )


def test_a_refusing_database_is_reported_without_libpq_details(
    operator_process: OperatorProcess, postgres: PostgresServer, namespace: str
) -> None:
    closed_port = str(free_port())
    put_secret(operator_process, namespace, **{**keys_of(postgres), "port": closed_port})
    deploy_external(operator_process, namespace, sslmode="disable")
    database = wait_for_condition(operator_process, namespace, "DatabaseReady", "Unreachable")
    message = database["message"]
    assert "details in the operator log" in message
    assert len(message) < 150
    for detail in ("Connection refused", closed_port, "Is the server running", "127.0.0.1"):
        assert detail not in message
    # The admin still finds libpq's words in the log.
    assert f"127.0.0.1:{closed_port} failed: Connection refused" in operator_process.log()

    # A wrong password: the same words, so a tenant cannot tell it from a closed port.
    put_secret(operator_process, namespace, **{**keys_of(postgres), "password": "wrong"})

    def login_refused_in_log() -> bool:
        return "password authentication failed" in operator_process.log()

    wait_for(login_refused_in_log, 60, "the failed login in the log", operator_process)
    database = condition(status(operator_process, namespace), "DatabaseReady")
    assert database["message"] == message
