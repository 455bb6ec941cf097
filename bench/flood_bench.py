"""A ban flood at scale on the real node: what it costs etcd, and how fast bans still travel.

Deploys the product (Helm chart, operator, 2 replicas, PostgreSQL on the
real node), loads a base of ``--base`` bans straight into the ledger (COPY)
and waits until the resource reports them, then inserts ``--rate`` new ledger
rows a second for ``--seconds`` (ten rows per transaction, each followed by the
service's ``NOTIFY``) while, once a second, a fresh client address calls
``/blacklisted`` on replica A and replica B is polled until it answers 403, and
an unrelated client lists Services through the API server every 200 ms, and
two real clients call ``/blacklisted`` as fast as they can from fresh client
addresses (up to 20,000 of them), so replicas also ban, record and mail. Then
a third replica is added: its time from container start to Ready (it is ready
only once it holds the whole list).

Figures: bytes etcd wrote to its WAL per new ban (``etcd_disk_wal_write_bytes_total``),
etcd's database size before and after, ban propagation A → B (p50, p99), the
API server's latency for the unrelated client (p99), the restarts of the
replicas and the operator (any OOM kill shows there), the operator's peak RSS
(``VmHWM``) and the replicas' peak memory as their cgroup counts it, and the new
replica's time to Ready. Run (``--seconds 0`` measures the base alone, e.g.
``--base 5000000``):
``.venv/bin/python bench/flood_bench.py [--base 1000000 --rate 1000 --seconds 600]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import stack
from blacklist_devtools.flood import (
    Probes,
    flood,
    load_base,
    percentile,
    pod_memory,
    probe_propagation,
    restarts,
    wait_banned_count,
)
from blacklist_devtools.http import get
from blacklist_devtools.kube import Cluster, wait_until
from blacklist_devtools.network import client_address
from report import Row, append_json, print_table

MIB = 1 << 20


def etcd_metric(port: int, name: str) -> float:
    """The value of one unlabelled etcd metric."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise RuntimeError(f"etcd does not report {name}")


def probe_api(handle: Cluster, stop: threading.Event, out: list[float]) -> None:
    """Every 200 ms: list the default namespace's Services, as an unrelated client would."""
    api = client.CoreV1Api(handle.api_client())
    while not stop.is_set():
        started = time.monotonic()
        api.list_namespaced_service("default")
        out.append(time.monotonic() - started)
        stop.wait(0.2)


HIT_CLIENTS = 20_000  # client addresses 0 … 19,999 for hits; the propagation probe uses 20,000 on


@dataclass
class Hits:
    """Real ``/blacklisted`` calls made during the flood."""

    sources: Iterator[int] = field(default_factory=lambda: iter(range(HIT_CLIENTS)))
    lock: threading.Lock = field(default_factory=threading.Lock)
    made: int = 0
    wrong: int = 0


def hit(urls: Sequence[str], stop: threading.Event, hits: Hits) -> None:
    """Call ``/blacklisted`` from fresh client addresses until ``stop`` or none is left."""
    turn = 0
    while not stop.is_set():
        with hits.lock:
            index = next(hits.sources, None)
        if index is None:
            return
        status = get(f"{urls[turn % len(urls)]}/blacklisted", source=client_address(index)).status
        turn += 1
        with hits.lock:
            hits.made += 1
            hits.wrong += status != 444


def pods(handle: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The pods of ``namespace`` matching ``selector``."""
    return list(stack.get_json(handle, "pods", "-n", namespace, "-l", selector)["items"])


def peak_memory(handle: Cluster, deployed: stack.Deployed) -> tuple[float, float, float]:
    """MiB: the operators' highest VmHWM, the service pods' highest cgroup peak and anon now."""
    operators = [
        pod_memory(handle, deployed.operator_namespace, pod["metadata"]["name"])["VmHWM"]
        for pod in pods(handle, deployed.operator_namespace, "app.kubernetes.io/name")
        if pod["status"].get("phase") == "Running"
    ]
    selector = f"app.kubernetes.io/instance={deployed.name},app.kubernetes.io/component=service"
    replicas = [
        pod_memory(handle, deployed.namespace, pod["metadata"]["name"])
        for pod in pods(handle, deployed.namespace, selector)
    ]
    return (
        max(operators, default=0) / MIB,
        max((found.get("peak", 0) for found in replicas), default=0) / MIB,
        max((found.get("anon", 0) for found in replicas), default=0) / MIB,
    )


def new_replica_ready(handle: Cluster, deployed: stack.Deployed) -> float:
    """Add a third replica; seconds from its container's start to its pod's Ready."""
    selector = f"app.kubernetes.io/instance={deployed.name},app.kubernetes.io/component=service"
    before = {pod["metadata"]["name"] for pod in pods(handle, deployed.namespace, selector)}
    handle.kubectl(
        "patch", "blacklistservice", deployed.name, "-n", deployed.namespace,
        "--type=merge", "-p", json.dumps({"spec": {"replicas": len(before) + 1}}),
    )  # fmt: skip
    seen: dict[str, float] = {}

    def ready() -> bool:
        for pod in pods(handle, deployed.namespace, selector):
            conditions = pod["status"].get("conditions") or []
            if pod["metadata"]["name"] not in before and any(
                c["type"] == "Ready" and c["status"] == "True" for c in conditions
            ):
                started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
                moment = datetime.datetime.fromisoformat(started.replace("Z", "+00:00"))
                seen["seconds"] = time.time() - moment.timestamp()
                return True
        return False

    if not wait_until(ready, timeout=300, interval=0.05):
        raise RuntimeError("the new replica was not Ready in 300 s")
    return seen["seconds"]


def measure(handle: Cluster, deployed: stack.Deployed, etcd_port: int, args: Any) -> list[Row]:
    """Load the base, flood, add a replica, and report."""
    found = deployed.instance()
    started = time.monotonic()
    load_base(found, args.base)
    wait_banned_count(deployed, args.base, timeout=1800)
    base_seconds = time.monotonic() - started
    wal_before = etcd_metric(etcd_port, "etcd_disk_wal_write_bytes_total")
    size_before = etcd_metric(etcd_port, "etcd_mvcc_db_total_size_in_bytes")
    stop = threading.Event()
    propagation = Probes()
    api: list[float] = []
    hits = Hits()
    flood_started = time.monotonic()
    probes = [
        threading.Thread(
            target=probe_propagation, args=(found.service_urls, stop, propagation, 20_000)
        ),
        threading.Thread(target=probe_api, args=(handle, stop, api)),
        *(threading.Thread(target=hit, args=(found.service_urls, stop, hits)) for _ in range(2)),
    ]
    for thread in probes:
        thread.start()
    try:
        inserted = flood(found, args.rate, args.seconds, stop)
    finally:
        stop.set()
        for thread in probes:
            thread.join()
    flood_seconds = max(1e-3, time.monotonic() - flood_started)
    wal_after = etcd_metric(etcd_port, "etcd_disk_wal_write_bytes_total")
    size_after = etcd_metric(etcd_port, "etcd_mvcc_db_total_size_in_bytes")
    operator_peak, replica_peak, replica_anon = peak_memory(handle, deployed)
    restarted = restarts(handle, [deployed.namespace, deployed.operator_namespace])
    ready_seconds = new_replica_ready(handle, deployed)
    section = f"flood: {args.base:,} bans, +{args.rate}/s for {args.seconds:.0f} s"
    new_bans = max(1, inserted + len(propagation.seconds) + hits.made - hits.wrong)
    seconds = propagation.seconds or [0.0]
    return [
        Row(section, "base synced", base_seconds, "s", "", 0.0, ""),
        Row(section, "etcd WAL bytes per new ban", (wal_after - wal_before) / new_bans, "B",
            "", 0.0, "≤ 4096 B"),
        Row(section, "etcd database after", size_after / MIB, "MiB", "before",
            size_before / MIB, "< 1024 MiB"),
        Row(section, "propagation A → B, p50", statistics.median(seconds) * 1000,
            "ms", "", 0.0, ""),
        Row(section, "propagation A → B, p99", percentile(seconds, 0.99) * 1000, "ms",
            "", 0.0, "≤ 1000 ms"),
        Row(section, "API server list p99 (other client)", percentile(api, 0.99) * 1000, "ms",
            "", 0.0, "≤ 1000 ms"),
        Row(section, "real /blacklisted hits a second (2 clients, fresh addresses)",
            hits.made / flood_seconds, "/s", "", 0.0, ""),
        Row(section, "hits not answered 444", hits.wrong, "", "", 0.0, "0"),
        Row(section, "container restarts", sum(restarted.values()), "", "", 0.0, "0"),
        Row(section, "operator peak RSS (VmHWM)", operator_peak, "MiB", "", 0.0, "≤ 160 MB"),
        Row(section, "service pod peak memory (cgroup, page cache included)", replica_peak,
            "MiB", "", 0.0, "≤ 256 MiB limit"),
        Row(section, "service pod anonymous memory after the flood (no page cache)",
            replica_anon, "MiB", "", 0.0, "< 256 MiB limit"),
        Row(section, "a new replica: container start → Ready (whole list held)",
            ready_seconds, "s", "", 0.0, "≤ 10 s"),
    ]  # fmt: skip


def main() -> None:
    """Deploy, load, flood, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    state = local_cluster.up()
    handle = Cluster(local_cluster.KUBECONFIG, state.server, local_cluster.binary("kubectl"))
    helm = local_cluster.binary("helm")
    with (
        tempfile.TemporaryDirectory(prefix="bench-flood-") as work,
        stack.deploy(handle, helm, Path(work), replicas=2) as deployed,
    ):
        rows = measure(handle, deployed, state.ports["etcd"], arguments)
    print_table(rows)
    append_json(arguments.json, rows)


if __name__ == "__main__":
    main()
