"""Ban sync from a real PostgreSQL ledger into the ban-list ConfigMaps."""

from __future__ import annotations

import base64
import ipaddress
import time
from typing import Any

import psycopg2.extras
import pytest

from blacklist_contract.lines import format_line
from blacklist_contract.wire import SNAPSHOT_ANNOTATION, decode_part
from blacklist_devtools.ledger_schema import LEDGER
from blacklist_devtools.postgres import PostgresServer
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def ledger(postgres: PostgresServer) -> PostgresServer:
    """An empty ledger table (dropped afterwards so the next test starts clean)."""
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_ledger")
    return postgres


def create_table(postgres: PostgresServer) -> None:
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute(LEDGER)


def insert(postgres: PostgresServer, addresses: list[str]) -> None:
    """Insert ledger rows and NOTIFY, as the service does."""
    connection = postgres.connect()
    try:
        with connection.cursor() as cursor:
            psycopg2.extras.execute_values(
                cursor,
                "INSERT INTO denied_access_ledger (event_id, path, ip_address, time) VALUES %s",
                [
                    (f"e-{time.monotonic_ns()}-{i}", "/blacklisted", a)
                    for i, a in enumerate(addresses)
                ],
                template="(%s, %s, %s, now())",
                page_size=10_000,
            )
            cursor.execute("NOTIFY denied_access_ledger")
        connection.commit()
    finally:
        connection.close()


def deploy(
    operator: OperatorProcess, postgres: PostgresServer, namespace: str, **spec: Any
) -> None:
    """A BlacklistService whose database is the test's PostgreSQL (Secret adopted)."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "bl-db", "namespace": namespace},
        "data": {
            "username": base64.b64encode(postgres.user.encode()).decode(),
            "password": base64.b64encode(postgres.password.encode()).decode(),
        },
    }
    apply_manifest(operator.cluster, secret)
    operator.map_database(namespace, "bl", postgres.host, postgres.port)
    database = {"name": postgres.database, **spec.pop("database", {})}
    apply_manifest(operator.cluster, blacklist_service("bl", namespace, database=database, **spec))


def banned_entries(operator: OperatorProcess, namespace: str, name: str = "bl") -> list[str]:
    """Every prefix of ``name``'s ban list as text: the snapshot parts, then the head's lines."""
    # A line is "PREFIX" or "PREFIX EXPIRY".
    return [line.split()[0] for line in banned_lines(operator, namespace, name)]


def banned_lines(operator: OperatorProcess, namespace: str, name: str = "bl") -> list[str]:
    """Every ban of ``name``'s ban list as a line ``PREFIX [EXPIRY]``: parts, then the head.

    Read as a replica reads it (blacklist_contract.wire): parts of another
    generation than the head's mean a compaction is under way, so read again.
    """
    for _ in range(5):
        head = get_json(operator.cluster, "configmap", f"{name}-banlist", "-n", namespace)
        if head is None:
            return []
        data = head["data"]
        entries: list[str] = []
        complete = True
        for index in range(1, int(data.get("parts", "0")) + 1):
            part = get_json(
                operator.cluster, "configmap", f"{name}-banlist-{index}", "-n", namespace
            )
            annotations = (part or {}).get("metadata", {}).get("annotations", {})
            if part is None or annotations.get(SNAPSHOT_ANNOTATION) != data["snapshot"]:
                complete = False
                break
            for section in decode_part(base64.b64decode(part["binaryData"]["bans"])):
                entries += [format_line(prefix, expiry) for prefix, expiry in section.bans()]
        if complete:
            return entries + [line for line in data["addresses"].splitlines() if line.strip()]
        time.sleep(0.2)
    raise AssertionError(f"the parts of {name}-banlist never matched its generation")


def status(operator: OperatorProcess, namespace: str) -> dict[str, Any]:
    return get_json(operator.cluster, "bls", "bl", "-n", namespace) or {}


def test_new_ledger_rows_reach_the_ban_list_fast(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    deploy(operator_process, ledger, namespace, allowlist=["10.9.0.0/16"])

    def no_ledger_yet() -> bool:
        synced = condition(status(operator_process, namespace), "BanListSynced")
        return synced.get("reason") == "LedgerNotCreated"

    wait_for(no_ledger_yet, 20, "BanListSynced with LedgerNotCreated", operator_process)
    assert condition(status(operator_process, namespace), "DatabaseReady")["status"] == "True"
    create_table(ledger)
    started = time.monotonic()
    insert(ledger, ["203.0.113.7", "10.9.1.1", "::ffff:198.51.100.2"])
    wait_for(
        lambda: (
            sorted(banned_entries(operator_process, namespace)) == ["198.51.100.2", "203.0.113.7"]
        ),
        5,
        "the new bans in the ConfigMap",
        operator_process,
    )
    latency = time.monotonic() - started
    assert latency < 2.0, f"ledger row -> ban list took {latency:.2f} s"
    wait_for(
        lambda: status(operator_process, namespace).get("status", {}).get("bannedCount") == 2,
        5,
        "bannedCount 2",
        operator_process,
    )
    banlist = get_json(operator_process.cluster, "configmap", "bl-banlist", "-n", namespace)
    assert banlist is not None
    assert banlist["data"]["count"] == "2"
    assert banlist["data"]["addresses"] == "198.51.100.2\n203.0.113.7\n"


def test_database_outage_is_a_condition_and_sync_resumes(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    create_table(ledger)
    insert(ledger, ["192.0.2.1"])
    deploy(operator_process, ledger, namespace)
    wait_for(lambda: banned_entries(operator_process, namespace) == ["192.0.2.1"], 20, "first sync")
    wait_for(
        lambda: condition(status(operator_process, namespace), "Ready").get("status") == "True",
        120,
        "Ready (both Deployments available)",
        operator_process,
    )
    ledger.stop()
    try:

        def unreachable() -> bool:
            return (
                condition(status(operator_process, namespace), "DatabaseReady").get("status")
                == "False"
            )

        wait_for(unreachable, 30, "DatabaseReady=False", operator_process)
        body = status(operator_process, namespace)
        assert condition(body, "Ready")["status"] == "True"
        assert body["status"]["bannedCount"] == 1
    finally:
        ledger.start()
    insert(ledger, ["192.0.2.2"])
    wait_for(
        lambda: sorted(banned_entries(operator_process, namespace)) == ["192.0.2.1", "192.0.2.2"],
        40,
        "sync after the database came back",
        operator_process,
    )


def test_100k_rows_sync_into_a_snapshot_and_survive_a_restart(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    create_table(ledger)
    addresses = [str(ipaddress.IPv4Address(0x0B000000 + i)) for i in range(100_000)]
    insert(ledger, addresses)
    started = time.monotonic()
    deploy(operator_process, ledger, namespace)

    def all_synced() -> bool:
        count = status(operator_process, namespace).get("status", {}).get("bannedCount")
        return bool(count == 100_000)

    wait_for(all_synced, 90, "100,000 bans synced", operator_process)
    elapsed = time.monotonic() - started
    synced = banned_entries(operator_process, namespace)
    assert len(synced) == len(set(synced)) == 100_000
    first = get_json(operator_process.cluster, "configmap", "bl-banlist", "-n", namespace)
    assert first is not None
    # A backlog this large is read as a rescan: one compaction, every ban in the parts.
    assert int(first["data"]["parts"]) >= 1
    assert first["data"]["addresses"] == ""
    assert first["metadata"]["annotations"]["blacklist.dev/ledger-cursor"] == "100000"
    print(f"100,000 rows synced in {elapsed:.1f} s")

    operator_process.stop()
    operator_process.start()
    insert(ledger, ["198.18.0.1"])
    wait_for(
        lambda: status(operator_process, namespace).get("status", {}).get("bannedCount") == 100_001,
        30,
        "the next ban after a restart",
        operator_process,
    )
