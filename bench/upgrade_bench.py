"""An operator upgrade under traffic: seconds from ``helm upgrade`` to every resource on B.

Publishes releases A and B of this tree to the test bed's registry (as ``make
release`` does), installs A from it on the real node, creates a resource on the
default images (2 replicas) and one pinned to A's service image (1 replica),
then, while a client calls the first one's NodePort about ten times a second
from a served and a banned address, runs ``helm upgrade`` to B and times it
until the resource's Deployment is rolled out on B's service image; then the
same for ``helm rollback`` to A. The baseline is the helm command alone (it
waits for the operator's own Deployment); the failed requests (connections lost
or a wrong answer) are set beside all the requests of the roll.
The checks of the same path are ``tests/e2e/test_upgrade.py``'s.
Run: ``.venv/bin/python bench/upgrade_bench.py``.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import upgrade
from blacklist_devtools.http import get
from blacklist_devtools.kube import Cluster
from blacklist_devtools.network import CLIENT_ADDRESSES
from blacklist_devtools.upgrade import FOLLOWER, Roll, Traffic
from report import Row, append_json, print_table

SERVED, BANNED = CLIENT_ADDRESSES[5], CLIENT_ADDRESSES[0]
SECTION = "upgrade (2 + 1 replicas)"


def rows(kind: str, roll: Roll) -> list[Row]:
    """The figures of one roll: its seconds, and the requests it failed."""
    failed = roll.connection_errors + len(roll.unexpected)
    return [
        Row(SECTION, f"helm {kind} → every resource on its image", roll.seconds, "s",
            f"helm {kind} --wait alone", roll.helm_seconds, ""),
        Row(SECTION, f"requests failed during the {kind}", failed, "requests",
            "requests sent", roll.requests, "≤ 5 % (none wrong)"),
    ]  # fmt: skip


def measure(cluster: Cluster) -> list[Row]:
    """Publish A and B, install A, upgrade to B and roll back, under traffic."""
    helm = local_cluster.binary("helm")
    namespace = f"bench-upgrade-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    try:
        with (
            upgrade.published_pair() as pair,
            upgrade.installed(cluster, helm, namespace, pair) as scenario,
        ):
            url = scenario.node_url(FOLLOWER)
            if get(f"{url}/blacklisted", source=BANNED).status != 444:
                raise RuntimeError(f"{BANNED} was not banned")
            with Traffic(url, SERVED, (BANNED,)) as traffic:
                upgraded = scenario.upgrade(traffic)
                rolled_back = scenario.rollback(traffic)
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    for failure in (*traffic.connection_errors, *traffic.unexpected):
        print(f"failed: {failure}", file=sys.stderr)
    return rows("upgrade", upgraded) + rows("rollback", rolled_back)


def main() -> None:
    """Measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    state = local_cluster.up()
    handle = Cluster(local_cluster.KUBECONFIG, state.server, local_cluster.binary("kubectl"))
    found = measure(handle)
    print_table(found)
    append_json(arguments.json, found)


if __name__ == "__main__":
    main()
