"""A real ``kubectl drain`` of the node under a BlacklistService with 2 replicas and its budget.

The local cluster has one real node, so a replica evicted by the drain cannot
be rescheduled while the node is cordoned: the PodDisruptionBudget (``N``,
``maxUnavailable: 1``) lets the drain evict exactly one replica, then blocks it
until its timeout, while the other replica stays Ready and keeps answering
through the NodePort.

This test cordons the shared node (``kubectl drain`` always does, whatever
``--pod-selector`` says) for about 20 seconds: pods that other test sessions
create meanwhile stay Pending until it is uncordoned, which ``finally`` always
does. It is marked ``disruptive`` so that it can be left out of parallel runs
(``-m "not disruptive"``).
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from blacklist_devtools import stack
from blacklist_devtools.http import get
from blacklist_devtools.network import CLIENT_ADDRESSES, NODE_ADDRESS
from blacklist_devtools.stack import Deployed

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.disruptive]

CALLER = CLIENT_ADDRESSES[2]
# kubectl drain's own timeout: the node stays cordoned this long (and a few seconds more).
DRAIN_TIMEOUT_SECONDS = 20


@dataclass
class Watch:
    """What a background watcher saw while the drain ran: answers through the NodePort, pods."""

    requests: int = 0
    failures: list[str] = field(default_factory=list)
    fewest_ready: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)


def ready_pods(deployed: Deployed, selector: str) -> list[dict[str, Any]]:
    pods = stack.get_json(deployed.cluster, "pods", "-n", deployed.namespace, "-l", selector)
    return [
        pod
        for pod in pods["items"]
        if not pod["metadata"].get("deletionTimestamp")
        and any(
            item["type"] == "Ready" and item["status"] == "True"
            for item in pod["status"].get("conditions", [])
        )
    ]


def call_node_port(url: str, watch: Watch) -> None:
    while not watch.stop.is_set():
        try:
            answer = get(f"{url}/?n=3", source=CALLER, timeout=3)
            if answer.status != 200 or answer.body != "9.0":
                watch.failures.append(f"{answer.status} {answer.body[:80]}")
        except OSError as error:
            watch.failures.append(repr(error))
        watch.requests += 1
        time.sleep(0.1)


def count_ready(deployed: Deployed, selector: str, watch: Watch) -> None:
    while not watch.stop.is_set():
        ready = len(ready_pods(deployed, selector))
        watch.fewest_ready = ready if watch.fewest_ready is None else min(watch.fewest_ready, ready)
        time.sleep(0.3)


def test_drain_evicts_one_replica_and_is_blocked_by_the_budget(deployed: Deployed) -> None:
    cluster = deployed.cluster
    selector = f"app.kubernetes.io/instance={deployed.name},app.kubernetes.io/component=service"
    budget = stack.get_json(cluster, "pdb", deployed.name, "-n", deployed.namespace)
    assert budget["spec"]["maxUnavailable"] == 1
    before = ready_pods(deployed, selector)
    assert len(before) == 2
    # The node the replicas run on: the one real node (the kwok node takes no real pods).
    (node,) = {pod["spec"]["nodeName"] for pod in before}
    service = stack.get_json(cluster, "service", deployed.name, "-n", deployed.namespace)
    node_url = f"http://{NODE_ADDRESS}:{service['spec']['ports'][0]['nodePort']}"
    assert get(f"{node_url}/?n=3", source=CALLER).body == "9.0"

    watch = Watch()
    watchers = [
        threading.Thread(target=call_node_port, args=(node_url, watch), daemon=True),
        threading.Thread(target=count_ready, args=(deployed, selector, watch), daemon=True),
    ]
    for thread in watchers:
        thread.start()
    started = time.monotonic()
    try:
        drain = subprocess.run(
            [
                cluster.kubectl_path, "drain", node, f"--pod-selector={selector}",
                "--ignore-daemonsets", "--delete-emptydir-data",
                f"--timeout={DRAIN_TIMEOUT_SECONDS}s",
            ],
            env=cluster.env, capture_output=True, text=True, check=False,
            timeout=DRAIN_TIMEOUT_SECONDS + 30,
        )  # fmt: skip
    finally:
        cluster.kubectl("uncordon", node)
        cordoned_for = time.monotonic() - started
        watch.stop.set()
        for thread in watchers:
            thread.join(timeout=10)
    output = drain.stdout + drain.stderr

    assert cordoned_for < DRAIN_TIMEOUT_SECONDS + 15, output
    assert drain.returncode != 0, output
    assert "disruption budget" in output, output
    evicted = [line for line in output.splitlines() if line.rstrip().endswith(" evicted")]
    assert len(evicted) == 1, output
    remaining = {pod["metadata"]["name"] for pod in ready_pods(deployed, selector)}
    original = {pod["metadata"]["name"] for pod in before}
    assert len(remaining & original) == 1, (remaining, original)
    assert watch.fewest_ready is not None
    assert watch.fewest_ready >= 1
    assert watch.requests >= DRAIN_TIMEOUT_SECONDS * 3
    assert watch.failures == [], watch.failures[:5]

    # Uncordoned, the evicted replica's replacement is scheduled and the service is whole again.
    stack.wait_ready(cluster, deployed.namespace, deployed.name, 120)
    assert len(ready_pods(deployed, selector)) == 2
