"""One tenant's database never stalls another tenant's ban sync.

Every resource has an external database of its own, on one real PostgreSQL.
As many tenants as the ban sync has threads hold their ledger in ``ACCESS
EXCLUSIVE`` mode, in their own database, as any tenant may; a ban in the last
tenant's ledger still reaches its ban list within the usual few seconds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg2.extras
import pytest

from blacklist_devtools.kube import Cluster
from blacklist_devtools.ledger_schema import LEDGER
from blacklist_devtools.postgres import PostgresServer
from tests.conftest import fresh_namespace
from tests.operator.helpers import OperatorProcess, condition, wait_for
from tests.operator.test_banlist_sync import banned_entries
from tests.operator.test_external_database_sync import deploy_external, put_secret, status

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]

# The ban sync's threads (BanSyncSupervisor's default): this many stalled tenants once
# took every one of them.
SYNC_THREADS = 4


@pytest.fixture
def namespaces(cluster: Cluster) -> Iterator[list[str]]:
    """One namespace per tenant: the stalling ones and the last, healthy one."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(contextlib.contextmanager(fresh_namespace)(cluster, __name__))
            for _ in range(SYNC_THREADS + 1)
        ]


def tenant_database(postgres: PostgresServer, index: int) -> str:
    """Database ``tenant_<index>`` with an empty ledger table."""
    name = f"tenant_{index}"
    postgres.create_database(name)
    with postgres.connect_to(name) as connection, connection.cursor() as cursor:
        cursor.execute(LEDGER)
    return name


def insert(postgres: PostgresServer, database: str, address: str) -> None:
    """One ledger row and the NOTIFY, as the service writes them."""
    connection = postgres.connect_to(database)
    try:
        with connection.cursor() as cursor:
            psycopg2.extras.execute_values(
                cursor,
                "INSERT INTO denied_access_ledger (event_id, path, ip_address, time) VALUES %s",
                [(f"e-{time.monotonic_ns()}", "/blacklisted", address)],
                template="(%s, %s, %s, now())",
            )
            cursor.execute("NOTIFY denied_access_ledger")
        connection.commit()
    finally:
        connection.close()


def synced(operator: OperatorProcess, namespace: str) -> bool:
    return condition(status(operator, namespace), "BanListSynced").get("status") == "True"


def test_tenants_holding_their_ledger_locked_stall_no_other_tenant(
    operator_process: OperatorProcess, postgres: PostgresServer, namespaces: list[str]
) -> None:
    postgres.start()
    databases = [tenant_database(postgres, index) for index in range(len(namespaces))]
    for namespace, database in zip(namespaces, databases, strict=True):
        put_secret(
            operator_process,
            namespace,
            host=postgres.host,
            port=str(postgres.port),
            username=postgres.user,
            password=postgres.password,
            dbname=database,
        )
        deploy_external(operator_process, namespace, sslmode="disable")
    for namespace in namespaces:
        wait_for(
            lambda namespace=namespace: synced(operator_process, namespace),
            60,
            f"the ban list of {namespace} synced",
            operator_process,
        )

    *stalling, healthy = zip(namespaces, databases, strict=True)
    holders: list[Any] = []
    try:
        for _, database in stalling:
            holder = postgres.connect_to(database)
            holders.append(holder)
            with holder.cursor() as cursor:
                cursor.execute("LOCK TABLE denied_access_ledger IN ACCESS EXCLUSIVE MODE")
        # Every stalling tenant's next poll (every 2 s here) meets its lock.
        time.sleep(5)
        healthy_namespace, healthy_database = healthy
        started = time.monotonic()
        insert(postgres, healthy_database, "203.0.113.50")
        wait_for(
            lambda: "203.0.113.50" in banned_entries(operator_process, healthy_namespace),
            30,
            "the healthy tenant's ban",
            operator_process,
        )
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"the healthy tenant's ban took {elapsed:.1f} s"
        # The stalled tenants are told why, without holding anything up.
        for namespace, _ in stalling:
            wait_for(
                lambda namespace=namespace: (
                    condition(status(operator_process, namespace), "DatabaseReady").get("status")
                    == "False"
                ),
                30,
                f"DatabaseReady=False in {namespace}",
                operator_process,
            )
    finally:
        for holder in holders:
            holder.rollback()
            holder.close()
    # Once let go, a stalled tenant syncs again.
    namespace, database = stalling[0]
    insert(postgres, database, "203.0.113.51")
    wait_for(
        lambda: "203.0.113.51" in banned_entries(operator_process, namespace),
        60,
        "the once-locked tenant's ban",
        operator_process,
    )
