"""Bans by prefix on the production server run alone: IPv6 /64, IPv4 /24, allowlist, lift.

A hit bans the covering prefix of the caller's address (``BAN_PREFIX_IPV4``,
``BAN_PREFIX_IPV6``); the ledger keeps the exact address; the allowlist wins
inside a banned prefix; lifting an address lifts the ban that covers it; a
replica started on an empty ban store loads the ledger's bans as prefixes.
Clients other than loopback addresses speak through a trusted proxy.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.net import free_port
from tests.service.processes import SERVICE_VARIABLES, ServiceFactory

pytestmark = pytest.mark.slow

PROXY = "127.0.30.1"


def status(url: str, client: str) -> int:
    """The status of ``GET /?n=2`` from ``client``: loopback directly, others via the proxy."""
    if client.startswith("127."):
        return get(f"{url}/?n=2", source=client).status
    return get(f"{url}/?n=2", source=PROXY, headers={"X-Forwarded-For": client}).status


def hit(url: str, client: str) -> int:
    if client.startswith("127."):
        return get(f"{url}/blacklisted", source=client).status
    return get(f"{url}/blacklisted", source=PROXY, headers={"X-Forwarded-For": client}).status


def refused(url: str, client: str) -> bool:
    # Fresh connections spread over both workers.
    return all(status(url, client) == 403 for _ in range(6))


def served(url: str, client: str) -> bool:
    return all(status(url, client) == 200 for _ in range(6))


def ledger_rows(state_dir: Path) -> set[str]:
    path = state_dir / "ledger.sqlite3"
    if not path.exists():
        return set()
    with sqlite3.connect(path) as connection:
        try:
            rows = connection.execute("SELECT ip_address FROM denied_access_ledger").fetchall()
        except sqlite3.OperationalError:
            return set()
    return {str(row[0]) for row in rows}


def lift(state_dir: Path, target: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    environment["DATABASE_URL"] = f"sqlite:///{state_dir / 'ledger.sqlite3'}"
    return subprocess.run(
        [sys.executable, "-m", "blacklist_service", "lift", target],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_hit_bans_its_prefix_the_allowlist_wins_and_a_lift_covers(
    service_factory: ServiceFactory,
) -> None:
    service = service_factory(
        BAN_PREFIX_IPV4="24", TRUSTED_PROXIES=PROXY, ALLOWLIST="127.0.33.7,2001:db8:5:5::7"
    )
    url = service.url
    assert wait_until(lambda: get(f"{url}/readyz").status == 200, timeout=20)
    # Both workers up: every check below asks both.
    assert wait_until(lambda: service.log().count(" serves") == 2, timeout=30)

    # IPv6: the default /64.
    assert hit(url, "2001:db8:1:2::a") == 444
    assert refused(url, "2001:db8:1:2::b")
    assert served(url, "2001:db8:1:3::b")
    # IPv4 with BAN_PREFIX_IPV4=24.
    assert hit(url, "127.0.31.5") == 444
    assert refused(url, "127.0.31.77")
    assert served(url, "127.0.32.1")
    # An allowlisted caller is never banned, and is served inside a banned prefix.
    assert hit(url, "127.0.33.7") == 444
    assert served(url, "127.0.33.9")
    assert hit(url, "127.0.33.5") == 444
    assert refused(url, "127.0.33.9")
    assert served(url, "127.0.33.7")
    assert hit(url, "2001:db8:5:5::1") == 444
    assert refused(url, "2001:db8:5:5::2")
    assert served(url, "2001:db8:5:5::7")
    # The ledger keeps the exact addresses.
    expected = {"2001:db8:1:2::a", "127.0.31.5", "127.0.33.7", "127.0.33.5", "2001:db8:5:5::1"}
    assert wait_until(lambda: ledger_rows(service.state_dir) == expected, timeout=20)
    metrics = get(service.metrics_url).body
    assert "blacklist_banned_addresses 4.0" in metrics

    # Lifting an address lifts the prefix that covers it; a CIDR lifts that prefix.
    lifted = lift(service.state_dir, "127.0.31.200")
    assert lifted.returncode == 0, lifted.stderr
    assert wait_until(lambda: served(url, "127.0.31.77"), timeout=5)
    lifted = lift(service.state_dir, "2001:db8:1:2::/64")
    assert lifted.returncode == 0, lifted.stderr
    assert "Lifted the ban on 2001:db8:1:2::/64" in lifted.stdout
    assert wait_until(lambda: served(url, "2001:db8:1:2::b"), timeout=5)
    assert refused(url, "127.0.33.9")

    # Started again on an empty ban store: the ledger's bans come back as prefixes,
    # the lifted ones stay lifted.
    assert service.stop() == 0
    shutil.rmtree(service.state_dir / "bans")
    service.start()
    assert wait_until(lambda: get(f"{url}/readyz").status == 200, timeout=20)
    assert refused(url, "127.0.33.200")
    assert refused(url, "2001:db8:5:5::3")
    assert served(url, "127.0.33.7")
    assert served(url, "127.0.31.77")
    assert served(url, "2001:db8:1:2::b")


@pytest.mark.process
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BAN_PREFIX_IPV4", "0"),
        ("BAN_PREFIX_IPV4", "33"),
        ("BAN_PREFIX_IPV4", "abc"),
        ("BAN_PREFIX_IPV6", "129"),
    ],
)
def test_a_bad_ban_prefix_length_stops_the_start(tmp_path: Path, name: str, value: str) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    environment.update(
        PORT=str(free_port()), BIND_ADDRESS="127.0.0.1", STATE_DIR=str(tmp_path), **{name: value}
    )
    started = subprocess.run(
        [sys.executable, "-m", "blacklist_service"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode != 0
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1, started.stderr
    assert name in lines[0]
    assert repr(value) in lines[0]
