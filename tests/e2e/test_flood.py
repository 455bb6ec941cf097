"""A ban flood on the real node: the replicas stay up, current, and a new one waits for the list.

The chart and a resource with 2 replicas run on the real node. A base of
300,000 bans goes straight into the ledger, then 500 new rows a second for
30 s, while once a second a real client calls ``/blacklisted`` on replica A
and replica B must refuse it within the SPEC's 2 seconds. Afterwards no
container restarted (an OOM kill would show), every replica holds every entry,
and a third replica, added after the flood, answers 403 to a client banned in
the base (in the snapshot parts) and to the last one banned (in the head) as
soon as it is Ready.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from blacklist_devtools import stack
from blacklist_devtools.flood import (
    Probes,
    flood,
    load_base,
    pod_memory,
    probe_propagation,
    restarts,
    wait_banned_count,
)
from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.network import client_address
from blacklist_devtools.stack import Deployed

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BASE = 300_000
RATE = 500
SECONDS = 30.0
SPEC_SECONDS = 2.0
EARLY = [client_address(index) for index in range(40_000, 40_005)]


def held(url: str) -> int:
    """The replica's ``blacklist_banned_addresses`` gauge."""
    for line in get(stack.metrics_url(url)).body.splitlines():
        if line.startswith("blacklist_banned_addresses "):
            return int(float(line.split()[1]))
    raise AssertionError(f"{url} reports no blacklist_banned_addresses")


def service_pods(deployed: Deployed) -> list[dict[str, object]]:
    """The resource's service pods."""
    selector = f"app.kubernetes.io/instance={deployed.name},app.kubernetes.io/component=service"
    pods = stack.get_json(deployed.cluster, "pods", "-n", deployed.namespace, "-l", selector)
    return list(pods["items"])


def is_ready(pod: dict[str, object]) -> bool:
    """Whether the pod's Ready condition is true."""
    status = pod.get("status") or {}
    assert isinstance(status, dict)
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    )


def test_replicas_stay_up_and_current_through_a_flood(deployed: Deployed) -> None:
    cluster = deployed.cluster
    found = deployed.instance()
    urls = list(found.service_urls)
    load_base(found, BASE, extra=EARLY)
    wait_banned_count(deployed, BASE + len(EARLY), timeout=240)

    stop = threading.Event()
    probes = Probes()
    prober = threading.Thread(
        target=probe_propagation, args=(urls, stop, probes, 41_000, 10.0), daemon=True
    )
    prober.start()
    try:
        inserted = flood(found, RATE, SECONDS, stop)
    finally:
        stop.set()
        prober.join()
    assert inserted >= RATE * SECONDS * 0.9, f"the flood inserted only {inserted} rows"
    assert len(probes.seconds) >= SECONDS / 2, probes
    assert max(probes.seconds) <= SPEC_SECONDS, sorted(probes.seconds)[-5:]

    total = BASE + len(EARLY) + inserted + len(probes.clients)
    wait_banned_count(deployed, total, timeout=60)
    assert wait_until(lambda: all(held(url) >= total for url in urls), timeout=30), [
        held(url) for url in urls
    ]
    namespaces = [deployed.namespace, deployed.operator_namespace]
    assert not any(restarts(cluster, namespaces).values()), restarts(cluster, namespaces)
    for pod in service_pods(deployed):
        name = str(pod["metadata"]["name"])  # type: ignore[index]
        print(name, pod_memory(cluster, deployed.namespace, name))

    before = {str(pod["metadata"]["name"]) for pod in service_pods(deployed)}  # type: ignore[index]
    cluster.kubectl(
        "patch", "blacklistservice", deployed.name, "-n", deployed.namespace,
        "--type=merge", "-p", json.dumps({"spec": {"replicas": 3}}),
    )  # fmt: skip
    newcomer: dict[str, object] = {}

    def new_pod_ready() -> bool:
        for pod in service_pods(deployed):
            if pod["metadata"]["name"] not in before and is_ready(pod):  # type: ignore[index]
                newcomer.update(pod)
                return True
        return False

    assert wait_until(new_pod_ready, timeout=120, interval=0.05)
    seen_ready = time.time()
    status = newcomer["status"]
    assert isinstance(status, dict)
    url = f"http://{status['podIP']}:{urls[0].rsplit(':', 1)[1]}"
    last = probes.clients[-1]
    answers = {source: get(f"{url}/?n=1", source=source).status for source in (EARLY[0], last)}
    count = held(url)
    assert answers == {EARLY[0]: 403, last: 403}
    assert count >= total, f"ready with {count:,} of {total:,} entries"
    started = status["containerStatuses"][0]["state"]["running"]["startedAt"]
    print(f"new replica: container started {started}, seen Ready at {time.ctime(seen_ready)}")
