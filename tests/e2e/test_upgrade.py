"""``helm upgrade`` from release A to release B of the published chart, then ``helm rollback``.

On the real node, as a user upgrades: releases A and B of this tree are published to
the test bed's registry (``make release``; their images differ by the release they
carry), A is installed from ``oci://localhost:5050/charts/blacklist-operator`` with
the operator watching only the test's namespace, and two resources are created: the
follower (2 replicas, no ``spec.image``: the operator's default) and the pinned one
(``spec.image`` = A's service image). Addresses are banned on both. A client keeps
calling the follower's NodePort from a served address and from the banned ones
while the chart is upgraded to B, and then rolled back to A. After each:

* the CRD carries the new release's chart label, the operator's pods run its image;
* the follower's Deployment runs its service image and every replica reports its
  version in ``blacklist_build_info``; the pinned resource is untouched (same
  generation, image and pods), and so are both databases (the default PostgreSQL
  image is the same in A and B);
* every ban holds on every replica, and each ledger has exactly the rows it had,
  plus the one of a hit made during the roll: none lost, none duplicated;
* the client got only the expected answers (200 ``49.0`` for the served address,
  403 for the banned ones), or a failed connection, on at most
  ``MAX_CONNECTION_ERROR_SHARE`` of the requests.

What the two releases published is deleted from the registry at the end. The CRD
is cluster-wide and other test sessions sharing the cluster install their own
releases, which take it over (``--take-ownership``) as this one does: so the test
watches the CRD during each helm command and checks that the command wrote the
release's CRD, rather than reading who owns it afterwards.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from blacklist_devtools import stack, upgrade
from blacklist_devtools.cluster import binary
from blacklist_devtools.http import Response, get
from blacklist_devtools.kube import Cluster, wait_until
from blacklist_devtools.network import CLIENT_ADDRESSES
from blacklist_devtools.release import Released
from blacklist_devtools.upgrade import FOLLOWER, PINNED, Roll, Scenario, Traffic

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.testbed]

BANNED = CLIENT_ADDRESSES[0:3]  # banned on the follower before the upgrade
BANNED_ON_PINNED = CLIENT_ADDRESSES[3]
HIT_DURING_UPGRADE = CLIENT_ADDRESSES[4]
SERVED = CLIENT_ADDRESSES[5]
HIT_DURING_ROLLBACK = CLIENT_ADDRESSES[6]
# The connections a roll may lose, out of all the client made from the start of the helm
# command to the end of the roll: the pods being stopped leave the Service's endpoints while
# their preStop hook sleeps, so it should be none; a few are allowed for kube-proxy's lag.
MAX_CONNECTION_ERROR_SHARE = 0.05
# A ban made while the operator's leader changes reaches new replicas within this (docs/
# high-availability.md: a lease duration, then the new leader's first ban sync).
HANDOVER_SECONDS = 30.0
CRD = "blacklistservices.blacklist.dev"


@pytest.fixture(scope="module")
def releases() -> Iterator[tuple[Released, Released]]:
    """Releases A and B of this tree in the test bed's registry; removed afterwards."""
    with upgrade.published_pair() as pair:
        yield pair


@dataclass(frozen=True)
class Untouched:
    """What must not change across an upgrade: the pinned resource and both databases."""

    generations: dict[str, int]
    images: dict[str, str]
    pinned_pods: frozenset[str]


def pod_names(cluster: Cluster, namespace: str, instance: str) -> frozenset[str]:
    selector = f"app.kubernetes.io/instance={instance},app.kubernetes.io/component=service"
    pods = stack.get_json(cluster, "pods", "-n", namespace, "-l", selector)["items"]
    return frozenset(pod["metadata"]["name"] for pod in pods)


def untouched(scenario: Scenario) -> Untouched:
    names = (PINNED, f"{PINNED}-postgres", f"{FOLLOWER}-postgres")
    deployments = {name: scenario.deployment(name) for name in names}
    return Untouched(
        generations={name: d["metadata"]["generation"] for name, d in deployments.items()},
        images={
            name: d["spec"]["template"]["spec"]["containers"][0]["image"]
            for name, d in deployments.items()
        },
        pinned_pods=pod_names(scenario.cluster, scenario.namespace, PINNED),
    )


def ledger(scenario: Scenario, name: str) -> list[tuple[str, str]]:
    return stack.ledger_rows(stack.instance(scenario.cluster, scenario.namespace, name))


def wait_for_rows(scenario: Scenario, name: str, count: int, timeout: float) -> None:
    """Wait until the ledger of ``name`` has at least ``count`` rows (a hit is delivered)."""
    assert wait_until(lambda: len(ledger(scenario, name)) >= count, timeout, interval=0.5), name


def hit(url: str, source: str) -> Response:
    """``GET /blacklisted`` until an answer comes: 444, or 403 if a lost connection got through."""
    for _ in range(20):
        try:
            return get(f"{url}/blacklisted", source=source, timeout=5)
        except OSError:
            continue
    raise AssertionError(f"no answer to {source}'s hit on {url}")


def refused_everywhere(scenario: Scenario, name: str, addresses: tuple[str, ...]) -> bool:
    urls = stack.instance(scenario.cluster, scenario.namespace, name).service_urls
    return bool(urls) and all(
        get(f"{url}/?n=2", source=address).status == 403 for url in urls for address in addresses
    )


def operator_pods(scenario: Scenario) -> list[dict[str, Any]]:
    pods = stack.get_json(
        scenario.cluster, "pods", "-n", scenario.namespace,
        "-l", f"app.kubernetes.io/instance={scenario.release_name}",
    )["items"]  # fmt: skip
    return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]


def operator_on(scenario: Scenario, released: Released) -> bool:
    """Every live operator pod (both replicas) runs ``released``'s operator image."""
    digest = released.images["operator"].partition("@")[2]
    pods = operator_pods(scenario)
    return len(pods) == 2 and all(
        status.get("imageID", "").endswith(digest)
        for pod in pods
        for status in pod["status"].get("containerStatuses", [])
    )


@contextlib.contextmanager
def crd_charts(cluster: Cluster) -> Iterator[list[str]]:
    """The ``helm.sh/chart`` label of every version of the CRD written while the block runs."""
    seen: list[str] = []
    watch = subprocess.Popen(
        [cluster.kubectl_path, "get", "crd", CRD, "--watch", "--output-watch-events=false",
         "-o", "jsonpath={.metadata.labels.helm\\.sh/chart}{\"\\n\"}"],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip

    def read() -> None:
        assert watch.stdout is not None
        seen.extend(line.strip() for line in watch.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # The CRD as it is now: the watch is established before the block writes anything.
        assert wait_until(lambda: bool(seen), timeout=10), "kubectl get crd --watch printed nothing"
        yield seen
    finally:
        watch.terminate()
        watch.wait(timeout=10)
        reader.join(timeout=10)
        if watch.stdout is not None:
            watch.stdout.close()


def check_release(
    scenario: Scenario,
    released: Released,
    before: Untouched,
    rows: dict[str, list[tuple[str, str]]],
    roll: Roll,
    charts: list[str],
) -> None:
    """Everything that must hold once the chart is ``released`` and the follower rolled.

    ``charts``: the chart labels of the CRD written during the helm command.
    """
    cluster = scenario.cluster
    # The first line is the CRD as it was when the watch started; the command wrote the next.
    assert f"blacklist-operator-{released.version}" in charts[1:], charts
    assert wait_until(lambda: operator_on(scenario, released), timeout=60, interval=0.5), [
        (pod["metadata"]["name"], pod["status"].get("containerStatuses"))
        for pod in operator_pods(scenario)
    ]
    service_image = released.images["service"]
    follower = scenario.deployment(FOLLOWER)
    assert upgrade.rolled_out_on(follower, service_image)
    versions = upgrade.replica_versions(cluster, scenario.namespace, FOLLOWER)
    assert versions == [released.version] * 2, versions

    def status_image() -> str:
        resource = stack.get_json(cluster, "blacklistservice", FOLLOWER, "-n", scenario.namespace)
        return str(resource.get("status", {}).get("image", ""))

    assert wait_until(lambda: status_image() == service_image, timeout=30, interval=0.5)
    assert untouched(scenario) == before
    # The bans listed before the helm command hold on every replica at once: the follower's
    # new pods were ready only with the list.
    assert refused_everywhere(scenario, FOLLOWER, BANNED)
    # A ban made during the command is in the old pods' own bans and the ledger; the new pods
    # get it from the list once the new leader's ban sync has read it (leader handover).
    banned = tuple(address for _, address in rows[FOLLOWER])
    assert wait_until(
        lambda: refused_everywhere(scenario, FOLLOWER, banned), timeout=HANDOVER_SECONDS
    ), [address for address in banned if not refused_everywhere(scenario, FOLLOWER, (address,))]
    assert refused_everywhere(scenario, PINNED, (BANNED_ON_PINNED,))
    for name, expected in rows.items():
        wait_for_rows(scenario, name, len(expected), 15)
        assert ledger(scenario, name) == expected, name
    assert roll.unexpected == (), roll.unexpected[:10]
    assert roll.requests >= 50, roll
    assert roll.connection_errors <= MAX_CONNECTION_ERROR_SHARE * roll.requests, roll
    print(
        f"{released.version}: {roll.seconds} s from helm to the follower rolled "
        f"(helm {roll.helm_seconds} s), {roll.requests} requests, "
        f"{roll.connection_errors} connection errors"
    )


def test_upgrade_to_b_and_rollback_to_a_keep_bans_rows_and_answers(
    cluster: Cluster, namespace: str, releases: tuple[Released, Released]
) -> None:
    a, b = releases
    with upgrade.installed(cluster, binary("helm"), namespace, releases) as scenario:
        follower_url = scenario.node_url(FOLLOWER)
        assert upgrade.replica_versions(cluster, namespace, FOLLOWER) == [a.version] * 2
        assert (
            scenario.deployment(FOLLOWER)["spec"]["template"]["spec"]["containers"][0]["image"]
            == a.images["service"]
        )
        for address in BANNED:
            assert hit(follower_url, address).status == 444
        assert hit(scenario.node_url(PINNED), BANNED_ON_PINNED).status == 444
        rows = {
            FOLLOWER: [("/blacklisted", address) for address in BANNED],
            PINNED: [("/blacklisted", BANNED_ON_PINNED)],
        }
        for name, expected in rows.items():
            wait_for_rows(scenario, name, len(expected), 30)
            assert sorted(ledger(scenario, name)) == sorted(expected)
            rows[name] = ledger(scenario, name)  # in the ledger's order
        assert wait_until(lambda: refused_everywhere(scenario, FOLLOWER, BANNED), timeout=5)
        assert refused_everywhere(scenario, PINNED, (BANNED_ON_PINNED,))
        before = untouched(scenario)

        with Traffic(follower_url, SERVED, BANNED) as traffic:
            assert wait_until(lambda: traffic.answered >= 20, timeout=10)
            assert traffic.unexpected == []
            assert traffic.connection_errors == []

            def hit_during(address: str) -> None:
                assert hit(follower_url, address).status in (444, 403)
                rows[FOLLOWER].append(("/blacklisted", address))

            with crd_charts(cluster) as charts:
                roll = scenario.upgrade(traffic, lambda: hit_during(HIT_DURING_UPGRADE))
            check_release(scenario, b, before, rows, roll, charts)

            with crd_charts(cluster) as charts:
                roll = scenario.rollback(traffic, lambda: hit_during(HIT_DURING_ROLLBACK))
            check_release(scenario, a, before, rows, roll, charts)
        revisions = json.loads(
            stack.helm(
                cluster, binary("helm"), "history", scenario.release_name,
                "--namespace", namespace, "-o", "json",
            )
        )  # fmt: skip
        assert [(r["revision"], r["chart"]) for r in revisions] == [
            (1, f"blacklist-operator-{a.version}"),
            (2, f"blacklist-operator-{b.version}"),
            (3, f"blacklist-operator-{a.version}"),
        ]
