"""Prefix bans, lifts of a covered address, compaction and the capacity, on the real cluster.

The operator of this module holds at most ``CAPACITY`` entries per ban list, so
the no-silent-ceiling behaviour shows with a handful of rows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import psycopg2.extras
import pytest

from blacklist_devtools.kube import Cluster
from blacklist_devtools.ledger_schema import LIFTS
from blacklist_devtools.postgres import PostgresServer
from tests.conftest import module_namespaces
from tests.operator.helpers import OperatorProcess, condition, get_json, wait_for
from tests.operator.test_banlist_lifecycle import lift
from tests.operator.test_banlist_sync import (
    banned_entries,
    create_table,
    deploy,
    insert,
    status,
)
from tests.operator.test_metrics import scrape, value

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]

CAPACITY = 5000
HEADROOM = CAPACITY // 100  # evicted beyond the excess when the list is full


@pytest.fixture(scope="module")
def operator_process(
    crd: Cluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """This module's operator keeps at most ``CAPACITY`` entries per ban list."""
    operator = OperatorProcess(
        crd, tmp_path_factory.mktemp("operator"), "--max-bans", str(CAPACITY),
        "--namespace", module_namespaces(request.module.__name__),
    ).start()  # fmt: skip
    yield operator
    operator.stop()


@pytest.fixture
def ledger(postgres: PostgresServer) -> PostgresServer:
    """Empty ledger and lift tables (the module shares one PostgreSQL)."""
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_ledger, denied_access_lifts")
        cursor.execute(LIFTS)
    create_table(postgres)
    return postgres


def test_ipv6_hits_ban_their_64_and_ipv4_hits_their_address(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    deploy(operator_process, ledger, namespace)
    # Three addresses of one customer's /64, one of another, one IPv4 client twice spelled.
    customer = ["2001:db8:0:1::5", "2001:db8:0:1:ffff::6", "2001:db8:0:1::7"]
    insert(ledger, [*customer, "2001:db8:0:2::1", "203.0.113.7", "::ffff:203.0.113.7"])
    wait_for(
        lambda: (
            sorted(banned_entries(operator_process, namespace))
            == ["2001:db8:0:1::/64", "2001:db8:0:2::/64", "203.0.113.7"]
        ),
        20,
        "one ban per /64 and one per IPv4 address",
        operator_process,
    )
    wait_for(
        lambda: status(operator_process, namespace).get("status", {}).get("bannedCount") == 3,
        10,
        "bannedCount 3",
        operator_process,
    )


def test_a_lift_of_any_covered_address_lifts_the_prefix_ban(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    deploy(operator_process, ledger, namespace)
    insert(ledger, ["2001:db8:0:3::5", "198.51.100.7"])
    wait_for(
        lambda: (
            sorted(banned_entries(operator_process, namespace))
            == ["198.51.100.7", "2001:db8:0:3::/64"]
        ),
        20,
        "both bans",
        operator_process,
    )
    # Another address of the same /64: what the client has now, not what it was banned for.
    lift(ledger, "2001:db8:0:3::abcd")
    wait_for(
        lambda: banned_entries(operator_process, namespace) == ["198.51.100.7"],
        5,
        "the /64 lifted",
        operator_process,
    )
    # A range wider than one ban lifts every ban inside it.
    lift(ledger, "198.51.100.0/24")
    wait_for(
        lambda: banned_entries(operator_process, namespace) == [],
        5,
        "the range lifted",
        operator_process,
    )
    insert(ledger, ["2001:db8:0:3::9"])
    wait_for(
        lambda: banned_entries(operator_process, namespace) == ["2001:db8:0:3::/64"],
        5,
        "a hit after the lift bans again",
        operator_process,
    )


def test_at_capacity_the_oldest_bans_go_and_the_resource_says_so(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    deploy(operator_process, ledger, namespace)
    wait_for(
        lambda: (
            condition(status(operator_process, namespace), "BanListSynced").get("status") == "True"
        ),
        30,
        "the first sync",
        operator_process,
    )
    # CAPACITY + 200 addresses, one second apart in ledger time: the 200 oldest must go, and
    # a hundredth of the capacity more (the headroom that spares a full list a rewrite per ban).
    addresses = [str(ipaddress.IPv4Address(0x0A000000 + index)) for index in range(CAPACITY + 200)]
    with ledger.connect() as connection, connection.cursor() as cursor:
        psycopg2.extras.execute_values(
            cursor,
            "INSERT INTO denied_access_ledger (event_id, path, ip_address, time) VALUES %s",
            [(f"cap-{i}", "/blacklisted", a, i) for i, a in enumerate(addresses)],
            template="(%s, %s, %s, now() - interval '1 hour' + %s * interval '1 second')",
        )
        cursor.execute("NOTIFY denied_access_ledger")

    def full() -> bool:
        synced = condition(status(operator_process, namespace), "BanListSynced")
        return synced.get("reason") == "BanListFull"

    wait_for(full, 30, "BanListSynced=False, reason BanListFull", operator_process)
    body = status(operator_process, namespace)
    assert condition(body, "BanListSynced")["status"] == "False"
    assert body["status"]["bannedCount"] == CAPACITY - HEADROOM
    entries = set(banned_entries(operator_process, namespace))
    assert entries == set(addresses[200 + HEADROOM :]), "the newest bans kept, the oldest evicted"
    head = get_json(operator_process.cluster, "configmap", "bl-banlist", "-n", namespace)
    assert head is not None
    assert head["data"]["capacity"] == str(CAPACITY)
    it = {"namespace": namespace, "name": "bl"}
    samples = scrape(operator_process)
    assert value(samples, "blacklist_operator_banlist_capacity", **it) == CAPACITY
    assert value(samples, "blacklist_operator_banlist_dropped_total", **it) == 200 + HEADROOM
    # A new hit is never the one dropped.
    insert(ledger, ["192.0.2.99"])
    wait_for(
        lambda: "192.0.2.99" in banned_entries(operator_process, namespace),
        10,
        "the newest ban in the list",
        operator_process,
    )
    assert "10.0.0.200" not in banned_entries(operator_process, namespace)
    # Still full: the headroom is not room until expiries or lifts make some.
    assert full(), condition(status(operator_process, namespace), "BanListSynced")


def test_a_head_full_of_lines_compacts_into_parts_and_new_bans_go_to_the_head(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    deploy(operator_process, ledger, namespace)
    wait_for(
        lambda: (
            condition(status(operator_process, namespace), "BanListSynced").get("status") == "True"
        ),
        30,
        "the first sync",
        operator_process,
    )
    # 2,500 IPv6 /64 lines of about 20 bytes: past 32 KiB, and more than the parts hold.
    insert(ledger, [f"2001:db8:{index:x}:1::1" for index in range(2500)])
    wait_for(
        lambda: len(banned_entries(operator_process, namespace)) == 2500,
        20,
        "2,500 bans",
        operator_process,
    )
    insert(ledger, ["203.0.113.50"])
    wait_for(
        lambda: "203.0.113.50" in banned_entries(operator_process, namespace),
        10,
        "the next ban",
        operator_process,
    )
    head = get_json(operator_process.cluster, "configmap", "bl-banlist", "-n", namespace)
    assert head is not None
    assert int(head["data"]["parts"]) >= 1, "the bans were compacted into a snapshot part"
    assert "203.0.113.50" in head["data"]["addresses"], "a later ban is a line of the head"
    assert int(head["data"]["count"]) == 2501
