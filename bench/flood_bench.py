"""A ban flood at scale on the real node: what it costs etcd, and how fast bans still travel.

Deploys the product (Helm chart, operator, 2 replicas, PostgreSQL on the
real node), loads a base of ``--base`` bans straight into the ledger (COPY)
and waits until the resource reports them, then inserts ``--rate`` new ledger
rows a second for ``--seconds`` (ten rows per transaction, each followed by the
service's ``NOTIFY``) while, once a second, a fresh client address calls
``/blacklisted`` on replica A and replica B is polled until it answers 403, and
an unrelated client lists Services through the API server every 200 ms.

Figures: bytes etcd wrote to its WAL per new ban (``etcd_disk_wal_write_bytes_total``),
etcd's database size before and after, ban propagation A → B (p50, p99), the
API server's latency for the unrelated client (p99), and the restarts of the
replicas and the operator (any OOM kill shows there). Run:
``.venv/bin/python bench/flood_bench.py [--base 1000000 --rate 1000 --seconds 600]``.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psycopg2
from kubernetes import client

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import stack
from blacklist_devtools.http import get
from blacklist_devtools.kube import Cluster
from blacklist_devtools.network import client_address
from blacklist_operator.builders.naming import POSTGRES_PORT
from report import Row, append_json, print_table

LEDGER = "denied_access_ledger"
# Base and flood addresses come from 11.0.0.0/8 and 12.0.0.0/8: ledger text only, never traffic.
BASE_FIRST = 11 << 24
FLOOD_FIRST = 12 << 24
ROWS_PER_TRANSACTION = 10


def etcd_metric(port: int, name: str) -> float:
    """The value of one unlabelled etcd metric."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise RuntimeError(f"etcd does not report {name}")


def connect(found: stack.Instance) -> Any:
    """A connection to the instance's ledger database."""
    return psycopg2.connect(
        host=found.database_address,
        port=POSTGRES_PORT,
        user=found.database_user,
        password=found.database_password,
        dbname=found.database_name,
    )


def address(first: int, index: int) -> str:
    """The ``index``-th address from ``first``."""
    return socket.inet_ntoa((first + index).to_bytes(4, "big"))


def load_base(found: stack.Instance, count: int) -> None:
    """COPY ``count`` ledger rows of distinct addresses, in chunks."""
    with connect(found) as connection, connection.cursor() as cursor:
        for start in range(0, count, 200_000):
            rows = io.StringIO()
            for index in range(start, min(count, start + 200_000)):
                rows.write(f"{uuid.uuid4()}\t/blacklisted\t{address(BASE_FIRST, index)}\tnow()\n")
            rows.seek(0)
            cursor.copy_from(rows, LEDGER, columns=("event_id", "path", "ip_address", "time"))
            connection.commit()
        cursor.execute(f"NOTIFY {LEDGER}")
        connection.commit()


def banned_count(deployed: stack.Deployed) -> int:
    """``status.bannedCount`` of the deployed resource."""
    return int((deployed.resource().get("status") or {}).get("bannedCount") or 0)


def flood(found: stack.Instance, rate: int, seconds: float, stop: threading.Event) -> int:
    """Insert ``rate`` rows a second until ``seconds`` pass; return how many were inserted."""
    inserted = 0
    started = time.monotonic()
    with connect(found) as connection, connection.cursor() as cursor:
        while not stop.is_set() and time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate)
            while inserted < due:
                batch = [
                    (str(uuid.uuid4()), "/blacklisted", address(FLOOD_FIRST, inserted + offset))
                    for offset in range(ROWS_PER_TRANSACTION)
                ]
                cursor.executemany(
                    f"INSERT INTO {LEDGER} (event_id, path, ip_address, time)"  # noqa: S608
                    " VALUES (%s, %s, %s, now())",
                    batch,
                )
                cursor.execute(f"NOTIFY {LEDGER}")
                connection.commit()
                inserted += len(batch)
            time.sleep(0.01)
    return inserted


def probe_propagation(deployed: stack.Deployed, stop: threading.Event, out: list[float]) -> None:
    """Once a second: ban a fresh client on replica A, time until replica B refuses it."""
    first, second = deployed.instance().service_urls[:2]
    index = 20_000
    while not stop.is_set():
        source = client_address(index)
        index += 1
        started = time.monotonic()
        if get(f"{first}/blacklisted", source=source).status != 444:
            continue
        while time.monotonic() - started < 30:
            if get(f"{second}/?n=1", source=source).status == 403:
                out.append(time.monotonic() - started)
                break
            time.sleep(0.01)
        else:
            out.append(30.0)
        stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def probe_api(handle: Cluster, stop: threading.Event, out: list[float]) -> None:
    """Every 200 ms: list the default namespace's Services, as an unrelated client would."""
    api = client.CoreV1Api(handle.api_client())
    while not stop.is_set():
        started = time.monotonic()
        api.list_namespaced_service("default")
        out.append(time.monotonic() - started)
        stop.wait(0.2)


def restarts(handle: Cluster, deployed: stack.Deployed) -> int:
    """Container restarts of the replicas and the operator so far."""
    total = 0
    for namespace in (deployed.namespace, deployed.operator_namespace):
        pods = stack.get_json(handle, "pods", "-n", namespace)
        for pod in pods.get("items") or []:
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                total += int(status.get("restartCount") or 0)
    return total


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def measure(handle: Cluster, deployed: stack.Deployed, etcd_port: int, args: Any) -> list[Row]:
    """Load the base, flood, and report."""
    found = deployed.instance()
    started = time.monotonic()
    load_base(found, args.base)
    while banned_count(deployed) < args.base:
        if time.monotonic() - started > 600:
            raise RuntimeError(f"the base of {args.base} bans was not synced in 10 minutes")
        time.sleep(1)
    base_seconds = time.monotonic() - started
    wal_before = etcd_metric(etcd_port, "etcd_disk_wal_write_bytes_total")
    size_before = etcd_metric(etcd_port, "etcd_mvcc_db_total_size_in_bytes")
    stop = threading.Event()
    propagation: list[float] = []
    api: list[float] = []
    probes = [
        threading.Thread(target=probe_propagation, args=(deployed, stop, propagation)),
        threading.Thread(target=probe_api, args=(handle, stop, api)),
    ]
    for thread in probes:
        thread.start()
    try:
        inserted = flood(found, args.rate, args.seconds, stop)
    finally:
        stop.set()
        for thread in probes:
            thread.join()
    wal_after = etcd_metric(etcd_port, "etcd_disk_wal_write_bytes_total")
    size_after = etcd_metric(etcd_port, "etcd_mvcc_db_total_size_in_bytes")
    section = f"flood: {args.base:,} bans, +{args.rate}/s for {args.seconds:.0f} s"
    new_bans = max(1, inserted + len(propagation))
    mib = 1 << 20
    return [
        Row(section, "base synced", base_seconds, "s", "", 0.0, ""),
        Row(section, "etcd WAL bytes per new ban", (wal_after - wal_before) / new_bans, "B",
            "", 0.0, "≤ 4096 B"),
        Row(section, "etcd database after", size_after / mib, "MiB", "before",
            size_before / mib, "< 1024 MiB"),
        Row(section, "propagation A → B, p50", statistics.median(propagation or [0]) * 1000,
            "ms", "", 0.0, ""),
        Row(section, "propagation A → B, p99", percentile(propagation, 0.99) * 1000, "ms",
            "", 0.0, "≤ 1000 ms"),
        Row(section, "API server list p99 (other client)", percentile(api, 0.99) * 1000, "ms",
            "", 0.0, "≤ 1000 ms"),
        Row(section, "container restarts", restarts(handle, deployed), "", "", 0.0, "0"),
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
