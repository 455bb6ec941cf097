"""The ban list follows the ledger exactly: out-of-order commits, lifts, expiry, a new ledger."""

from __future__ import annotations

import time

import psycopg2.extras
import pytest

from blacklist_devtools.ledger_schema import LIFTS
from blacklist_devtools.postgres import PostgresServer
from tests.operator.helpers import OperatorProcess, condition, get_json, wait_for
from tests.operator.test_banlist_sync import (
    banned_entries,
    banned_lines,
    create_table,
    deploy,
    insert,
    status,
)

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def ledger(postgres: PostgresServer) -> PostgresServer:
    """Empty ledger and lift tables (the module shares one PostgreSQL)."""
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_ledger")
        cursor.execute("DROP TABLE IF EXISTS denied_access_lifts")
        cursor.execute(LIFTS)
    create_table(postgres)
    return postgres


def lift(postgres: PostgresServer, address: str) -> None:
    """Lift a ban as ``python -m blacklist_service lift`` does: a row and a NOTIFY."""
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("INSERT INTO denied_access_lifts (ip_address) VALUES (%s)", (address,))
        cursor.execute("NOTIFY denied_access_ledger")


def lines(operator: OperatorProcess, namespace: str) -> list[str]:
    return banned_lines(operator, namespace)


def test_a_row_committed_after_higher_ids_still_reaches_the_ban_list(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    deploy(operator_process, ledger, namespace)
    wait_for(lambda: banned_entries(operator_process, namespace) == [], 30, "an empty ban list")
    # A courier's transaction draws a low id and stays open (an outage backlog flushing)...
    slow = ledger.connect()
    try:
        with slow.cursor() as cursor:
            cursor.execute(
                "INSERT INTO denied_access_ledger (event_id, path, ip_address, time) "
                "VALUES ('slow-1', '/blacklisted', '192.0.2.200', now()); "
                "NOTIFY denied_access_ledger"
            )
        # ...while another commits 1,500 rows with higher ids, which are synced.
        later = [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(1500)]
        insert(ledger, later)
        wait_for(
            lambda: (
                status(operator_process, namespace).get("status", {}).get("bannedCount") == 1500
            ),
            30,
            "the 1,500 later rows synced",
            operator_process,
        )
        started = time.monotonic()
        slow.commit()
    finally:
        slow.close()
    wait_for(
        lambda: "192.0.2.200" in banned_entries(operator_process, namespace),
        2,
        "the row committed last, holding the lowest id",
        operator_process,
    )
    print(f"out-of-order row in the ban list {time.monotonic() - started:.2f} s after commit")
    assert len(banned_entries(operator_process, namespace)) == 1501


def test_a_lifted_ban_leaves_the_list_and_a_new_hit_bans_again(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    insert(ledger, ["192.0.2.10", "192.0.2.11"])
    deploy(operator_process, ledger, namespace)
    wait_for(lambda: len(banned_entries(operator_process, namespace)) == 2, 30, "first sync")
    started = time.monotonic()
    lift(ledger, "::ffff:192.0.2.10")
    wait_for(
        lambda: banned_entries(operator_process, namespace) == ["192.0.2.11"],
        5,
        "the lifted address out of the ban list",
        operator_process,
    )
    print(f"lift -> ban list {time.monotonic() - started:.2f} s")
    first = get_json(operator_process.cluster, "configmap", "bl-banlist", "-n", namespace)
    assert first is not None
    assert int(first["metadata"]["annotations"]["blacklist.dev/lifts-seen"]) > 0
    # The ledger keeps its rows: the lift is a new fact, not an erasure.
    with ledger.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM denied_access_ledger WHERE ip_address = '192.0.2.10'")
        assert cursor.fetchone() == (1,)
    insert(ledger, ["192.0.2.10"])
    wait_for(
        lambda: sorted(banned_entries(operator_process, namespace)) == ["192.0.2.10", "192.0.2.11"],
        5,
        "a hit after the lift bans again",
        operator_process,
    )
    # A restarted operator reads every lift again and keeps the new ban.
    operator_process.stop()
    operator_process.start()
    insert(ledger, ["192.0.2.12"])
    wait_for(
        lambda: (
            sorted(banned_entries(operator_process, namespace))
            == ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
        ),
        30,
        "the list after a restart",
        operator_process,
    )


def test_a_hit_delivered_late_after_a_lift_stays_lifted(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    insert(ledger, ["192.0.2.20"])
    deploy(operator_process, ledger, namespace)
    wait_for(
        lambda: banned_entries(operator_process, namespace) == ["192.0.2.20"], 30, "first sync"
    )
    lift(ledger, "192.0.2.20")
    wait_for(
        lambda: banned_entries(operator_process, namespace) == [], 5, "lifted", operator_process
    )
    # A replica's outbox delivers, after the lift, a hit that happened before it.
    with ledger.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO denied_access_ledger (event_id, path, ip_address, time) "
            "VALUES ('late-1', '/blacklisted', '192.0.2.20', now() - interval '1 minute'), "
            "('new-1', '/blacklisted', '192.0.2.21', now()); NOTIFY denied_access_ledger"
        )
    wait_for(
        lambda: banned_entries(operator_process, namespace) == ["192.0.2.21"], 5, "the next hit"
    )


def test_ban_duration_writes_expiries_and_drops_expired_bans(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    with ledger.connect() as connection, connection.cursor() as cursor:
        psycopg2.extras.execute_values(
            cursor,
            "INSERT INTO denied_access_ledger (event_id, path, ip_address, time) VALUES %s",
            [("old", "/blacklisted", "192.0.2.30", "2020-01-01T00:00:00Z")],
        )
    deploy(operator_process, ledger, namespace, banDuration="8s")

    def connected() -> bool:
        body = status(operator_process, namespace)
        return condition(body, "BanListSynced").get("status") == "True"

    # The hit comes once the operator reads the ledger: an 8 s ban must not expire
    # while the database Deployment is still starting.
    wait_for(connected, 60, "the first sync (the expired row left out)", operator_process)
    assert lines(operator_process, namespace) == []
    insert(ledger, ["192.0.2.31"])
    seen: list[str] = []

    def synced() -> bool:
        seen[:] = lines(operator_process, namespace)
        return len(seen) == 1

    wait_for(synced, 5, "the new ban with its expiry", operator_process)
    address, expiry = seen[0].split()
    assert address == "192.0.2.31"
    assert int(expiry) <= time.time() + 9
    wait_for(
        lambda: lines(operator_process, namespace) == [],
        25,
        "the expired ban out of the list",
        operator_process,
    )
    # Lengthening the duration rebuilds the list from the ledger with the new expiries.
    body = get_json(operator_process.cluster, "bls", "bl", "-n", namespace)
    assert body is not None
    operator_process.cluster.kubectl(
        "patch", "bls", "bl", "-n", namespace, "--type=merge", "-p", '{"spec":{"banDuration":"1h"}}'
    )
    wait_for(
        lambda: [line.split()[0] for line in lines(operator_process, namespace)] == ["192.0.2.31"],
        15,
        "the ban back with a one-hour duration",
        operator_process,
    )


def test_a_recreated_ledger_resets_the_cursor(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    insert(ledger, [f"192.0.2.{i}" for i in range(40, 60)])
    deploy(operator_process, ledger, namespace)
    wait_for(lambda: len(banned_entries(operator_process, namespace)) == 20, 30, "first sync")
    with ledger.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE denied_access_ledger")
    create_table(ledger)
    insert(ledger, ["203.0.113.1"])
    wait_for(
        lambda: banned_entries(operator_process, namespace) == ["203.0.113.1"],
        15,
        "the new ledger's ban, from id 1",
        operator_process,
    )
