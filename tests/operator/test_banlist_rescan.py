"""The periodic full rescan of the ledger: rows deleted from it (unbans) leave the ban list."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blacklist_devtools.kube import Cluster
from blacklist_devtools.postgres import PostgresServer
from tests.conftest import SESSION_NAMESPACES
from tests.operator.helpers import OperatorProcess, wait_for
from tests.operator.test_banlist_sync import banned_entries, create_table, deploy, insert

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def operator_process(
    crd: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """This module's operator rescans the ledger every 3 seconds instead of every 10 minutes."""
    operator = OperatorProcess(
        crd, tmp_path_factory.mktemp("operator"), "--ban-rescan-interval", "3",
        "--namespace", SESSION_NAMESPACES,
    ).start()  # fmt: skip
    yield operator
    operator.stop()


def test_deleted_ledger_rows_leave_the_ban_list(
    operator_process: OperatorProcess, postgres: PostgresServer, namespace: str
) -> None:
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_ledger")
    create_table(postgres)
    insert(postgres, ["192.0.2.10", "192.0.2.11"])
    deploy(operator_process, postgres, namespace)
    wait_for(
        lambda: sorted(banned_entries(operator_process, namespace)) == ["192.0.2.10", "192.0.2.11"],
        30,
        "first sync",
        operator_process,
    )
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DELETE FROM denied_access_ledger WHERE ip_address = '192.0.2.10'")
    wait_for(
        lambda: banned_entries(operator_process, namespace) == ["192.0.2.11"],
        30,
        "the unbanned address removed by the rescan",
        operator_process,
    )
