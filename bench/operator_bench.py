"""Benchmark of blacklist-operator against the local control plane (prints a table).

Measures, on the real node (real containers of the locally built images): one
CR create → Ready=True (p50 of 3) against a bare ``kubectl apply`` of the same
children until both Deployments are Available, on the same node; 10 CRs → all
Ready. On the simulated (kwok) node, whose pods never run (their namespaces
carry a default toleration and node selector for it): 50 and 200 CRs → all
Ready against one CR's time multiplied by N; the operator's RSS then; ledger
row → ban list latency (p50 of 10); the time to sync 100,000 ledger rows.

Run: ``.venv/bin/python bench/operator_bench.py`` (starts the cluster if needed).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2.extras
from kubernetes import client, config

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import images
from blacklist_devtools.controlplane import SIMULATED_NODE_TAINT
from blacklist_devtools.ledger_schema import LEDGER
from blacklist_devtools.net import free_port
from blacklist_devtools.nodeconfig import PAUSE_IMAGE
from blacklist_devtools.postgres import PostgresServer
from blacklist_operator.builders import build_children, build_database_secret
from blacklist_operator.model.resource import parse

REPO = Path(__file__).resolve().parents[1]
# Pods on the simulated node never run: any image name does.
SIMULATED_IMAGES: dict[str, Any] = {
    "image": "kwok.test/service-under-kwok:v1",
    "database": {"image": "kwok.test/pg:16"},
}
# Namespace annotations (admission plugins PodNodeSelector and PodTolerationRestriction)
# that send every pod of a namespace to the simulated node.
SIMULATED_NAMESPACE = {
    "scheduler.alpha.kubernetes.io/node-selector": "type=kwok",
    "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
        [{**SIMULATED_NODE_TAINT, "operator": "Equal"}]
    ),
}


class Bench:
    """The cluster, its clients and one operator subprocess."""

    def __init__(self, work: Path) -> None:
        local_cluster.up()
        self.kubeconfig = str(local_cluster.KUBECONFIG)
        self.kubectl = local_cluster.binary("kubectl")
        api = config.new_client_from_config(config_file=self.kubeconfig)
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.work = work
        self.address_map = work / "addresses.json"
        self.address_map.write_text("{}")
        self.operator: subprocess.Popen[bytes] | None = None
        self.namespaces: list[str] = []

    def run_kubectl(self, *arguments: str, stdin: str | None = None) -> str:
        return subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, *arguments],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def namespace(self, simulated: bool) -> str:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        annotations = SIMULATED_NAMESPACE if simulated else {}
        self.core.create_namespace({"metadata": {"name": name, "annotations": annotations}})
        self.namespaces.append(name)
        return name

    def start_operator(self) -> None:
        port = free_port()
        # The allocator settings of the operator image (Dockerfile.operator).
        env = {"KUBECONFIG": self.kubeconfig, "PATH": "/usr/bin:/bin", **images.OPERATOR_IMAGE_ENV}
        self.operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "blacklist_operator",
                "--database-address-map",
                str(self.address_map),
                "--liveness",
                f"http://127.0.0.1:{port}/healthz",
                "--ban-poll-interval",
                "5",
                "--ban-rescan-interval",
                str(RESCAN_SECONDS),
            ],
            env=env,
            stdout=(self.work / "operator.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the operator did not start")

    def rss_megabytes(self, field: str = "VmRSS") -> float:
        assert self.operator is not None
        for line in Path(f"/proc/{self.operator.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def peak_rss_megabytes(self) -> float:
        """The operator's highest resident size so far (VmHWM)."""
        return self.rss_megabytes("VmHWM")

    def create(self, namespace: str, name: str, simulated: bool = True, **spec: Any) -> None:
        body = {
            "apiVersion": "blacklist.dev/v1",
            "kind": "BlacklistService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**(SIMULATED_IMAGES if simulated else images.spec_images()), **spec},
        }
        self.custom.create_namespaced_custom_object(
            "blacklist.dev", "v1", namespace, "blacklistservices", body
        )

    def ready_count(self, namespace: str) -> int:
        listed = self.custom.list_namespaced_custom_object(
            "blacklist.dev", "v1", namespace, "blacklistservices"
        )
        return sum(
            1
            for item in listed["items"]
            for condition in (item.get("status") or {}).get("conditions") or []
            if condition["type"] == "Ready" and condition["status"] == "True"
        )

    def status_of(self, namespace: str, name: str) -> dict[str, Any]:
        body = self.custom.get_namespaced_custom_object(
            "blacklist.dev", "v1", namespace, "blacklistservices", name
        )
        return dict(body.get("status") or {})

    def time_until_ready(
        self, count: int, simulated: bool, timeout: float = 300
    ) -> tuple[float, int]:
        """Seconds until ``count`` new CRs are all Ready, and how many were (on timeout)."""
        namespace = self.namespace(simulated)
        started = time.monotonic()
        for index in range(count):
            self.create(namespace, f"b{index}", simulated)
        ready = 0
        while (ready := self.ready_count(namespace)) < count:
            if time.monotonic() - started > timeout:
                break
            time.sleep(0.05 if count == 1 else 0.5)
        elapsed = time.monotonic() - started
        if not simulated:
            self.drop(namespace)
        return elapsed, ready

    def drop(self, namespace: str) -> None:
        """Delete a namespace of the real node and wait until it is gone, freeing the node."""
        self.run_kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=180s")
        self.namespaces.remove(namespace)

    def pod_ready_seconds(self, image: str) -> float:
        """Seconds from creating a bare pod of ``image`` on the real node until it is Ready."""
        namespace = self.namespace(simulated=False)
        name = f"start-{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        self.run_kubectl("run", name, "-n", namespace, f"--image={image}",
                         "--image-pull-policy=IfNotPresent", "--restart=Never")  # fmt: skip
        self.run_kubectl("wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace,
                         "--timeout=120s")  # fmt: skip
        elapsed = time.monotonic() - started
        self.drop(namespace)
        return elapsed

    def bare_apply_seconds(self) -> float:
        """Baseline: ``kubectl apply`` of the same children on the real node until Available."""
        namespace = self.namespace(simulated=False)
        bls = parse({"metadata": {"name": "bare", "namespace": namespace, "uid": "x"},
                     "spec": images.spec_images()})  # fmt: skip
        manifests = [*build_children(bls), build_database_secret(bls, "password")]
        for manifest in manifests:
            manifest["metadata"].pop("ownerReferences", None)
        document = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
        started = time.monotonic()
        self.run_kubectl("apply", "--server-side", "-f", "-", stdin=document)
        self.run_kubectl("wait", "--for=condition=Available", "--timeout=300s", "-n", namespace,
                         "deployment/bare", "deployment/bare-postgres")  # fmt: skip
        elapsed = time.monotonic() - started
        self.drop(namespace)
        return elapsed

    def cleanup(self) -> None:
        """Delete the namespaces while the operator still runs (it removes its finalizers).

        Stopping the operator first left every BlacklistService, and so every child,
        in a Terminating namespace, for the next run's operator to list and finish.
        """
        for namespace in self.namespaces:
            self.run_kubectl("delete", "namespace", namespace, "--wait=false")
        deadline = time.monotonic() + 300
        while self.namespaces and time.monotonic() < deadline:
            remaining = self.run_kubectl("get", "namespaces", "-o", "name").split()
            self.namespaces = [n for n in self.namespaces if f"namespace/{n}" in remaining]
            time.sleep(1)
        if self.operator is not None:
            self.operator.terminate()
            self.operator.wait(timeout=30)


MILLION = 1_000_000
# The bench operator rescans every ledger this often (the default is 10 minutes).
RESCAN_SECONDS = 20


@dataclass(frozen=True)
class LedgerFigures:
    """What the ledger measurements found."""

    latency: float  # p50 seconds ledger row -> ConfigMap
    bulk: float  # seconds to sync 100,000 rows
    peak_rss: float  # MB, the operator's peak after syncing and rescanning 1,000,000 bans


def insert_rows(connection: Any, first: int, count: int) -> None:
    """``count`` ledger rows of consecutive IPv4 addresses from ``first``, in one transaction."""
    for start in range(0, count, 100_000):
        rows = [(uuid.uuid4().hex, "/blacklisted", str(ipaddress.IPv4Address(first + i)))
                for i in range(start, min(count, start + 100_000))]  # fmt: skip
        with connection.cursor() as cursor:
            psycopg2.extras.execute_values(
                cursor,
                "INSERT INTO denied_access_ledger (event_id, path, ip_address, time) VALUES %s",
                rows,
                template="(%s, %s, %s, now())",
                page_size=10_000,
            )


def ledger_benchmarks(bench: Bench) -> LedgerFigures:
    """Ledger row -> ConfigMap latency, 100,000-row sync time, peak RSS at a million bans."""
    postgres = PostgresServer(base_dir=Path(tempfile.mkdtemp(prefix="bench-pg-")))
    postgres.start()
    try:
        connection = postgres.connect()
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(LEDGER)
        namespace = bench.namespace(simulated=True)
        entries = json.loads(bench.address_map.read_text())
        entries[f"{namespace}/led"] = f"{postgres.host}:{postgres.port}"
        entries[f"{namespace}/bulk"] = f"{postgres.host}:{postgres.port}"
        bench.address_map.write_text(json.dumps(entries))
        for name in ("led", "bulk"):
            bench.core.create_namespaced_secret(namespace, {
                "metadata": {"name": f"{name}-db"},
                "data": {"username": base64.b64encode(postgres.user.encode()).decode(),
                         "password": base64.b64encode(postgres.password.encode()).decode()},
            })  # fmt: skip
        bench.create(
            namespace, "led", database={**SIMULATED_IMAGES["database"], "name": postgres.database}
        )
        while bench.status_of(namespace, "led").get("bannedCount") is None:
            time.sleep(0.1)
        latencies = []
        for index in range(10):
            address = f"198.18.0.{index + 1}"
            started = time.monotonic()
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO denied_access_ledger (event_id, path, ip_address, time) "
                    "VALUES (%s, '/blacklisted', %s, now()); NOTIFY denied_access_ledger",
                    (uuid.uuid4().hex, address),
                )
            while True:
                data = bench.core.read_namespaced_config_map("led-banlist", namespace).data
                if address in (data or {}).get("addresses", ""):
                    break
                time.sleep(0.01)
            latencies.append(time.monotonic() - started)
        insert_rows(connection, 0x0B000000, 100_000)
        started = time.monotonic()
        bench.create(
            namespace, "bulk", database={**SIMULATED_IMAGES["database"], "name": postgres.database}
        )
        while (bench.status_of(namespace, "bulk").get("bannedCount") or 0) < 100_010:
            time.sleep(0.1)
        bulk_seconds = time.monotonic() - started
        # Up to a million bans: the sync, then full rescans of the whole ledger.
        insert_rows(connection, 0x0C000000, MILLION - 100_010)
        while (bench.status_of(namespace, "bulk").get("bannedCount") or 0) < MILLION:
            time.sleep(0.5)
        time.sleep(2.5 * RESCAN_SECONDS)
        return LedgerFigures(statistics.median(latencies), bulk_seconds, bench.peak_rss_megabytes())
    finally:
        postgres.destroy()


def main() -> None:
    """Run every measurement and print the table."""
    work = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    bench = Bench(work)
    bench.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    rows: list[tuple[str, str, str, str]] = []
    try:
        pause = statistics.median(bench.pod_ready_seconds(PAUSE_IMAGE) for _ in range(3))
        service = statistics.median(
            bench.pod_ready_seconds(images.reference("service")) for _ in range(3)
        )
        rows.append(("real node: pod of the pause image -> Ready (p50 of 3)", f"{pause:.2f} s",
                     "baseline", ""))  # fmt: skip
        rows.append(("real node: pod of the service image -> Ready (p50 of 3)",
                     f"{service:.2f} s", f"{service / pause:.2f}x pause", ""))  # fmt: skip
        bare = statistics.median(bench.bare_apply_seconds() for _ in range(3))
        bench.start_operator()
        one = statistics.median(bench.time_until_ready(1, simulated=False)[0] for _ in range(3))
        rows.append(("real node: bare apply of one CR's children -> Available", f"{bare:.2f} s",
                     "baseline", ""))  # fmt: skip
        rows.append(("real node: 1 CR -> Ready (p50 of 3)", f"{one:.2f} s",
                     f"{one / bare:.2f}x bare", "<= 1.0x bare (was 1.3x)"))  # fmt: skip
        seconds, ready = bench.time_until_ready(10, simulated=False)
        value = f"{seconds:.1f} s" if ready == 10 else f"timeout, {ready}/10 Ready"
        rows.append(("real node: 10 CRs -> all Ready", value,
                     f"{seconds / (one * 10):.2f}x 10x(1 CR)", ""))  # fmt: skip
        simulated_one = statistics.median(
            bench.time_until_ready(1, simulated=True)[0] for _ in range(5)
        )
        for count, target in ((50, ""), (200, "<= 30 s")):
            seconds, ready = bench.time_until_ready(count, simulated=True)
            ratio = f"{seconds / (simulated_one * count):.2f}x {count}x(1 CR)"
            value = f"{seconds:.1f} s" if ready == count else f"timeout, {ready}/{count} Ready"
            rows.append((f"simulated node: {count} CRs -> all Ready", value, ratio, target))
        rss = bench.rss_megabytes()
        rows.append(("operator RSS with 266 CRs", f"{rss:.0f} MB", "", "<= 100 MB at 255"))
        figures = ledger_benchmarks(bench)
        rows.append(("ledger row -> ban list (p50 of 10)", f"{figures.latency * 1000:.0f} ms",
                     "", "<= 50 ms (was 100)"))  # fmt: skip
        rows.append(("sync 100,000 ledger rows", f"{figures.bulk:.1f} s", "", "<= 1 s"))
        rows.append(("operator peak RSS, 1,000,000 bans synced and rescanned",
                     f"{figures.peak_rss:.0f} MB", f"{figures.peak_rss / 256:.2f}x 256Mi limit",
                     "<= 160 MB"))  # fmt: skip
    finally:
        bench.cleanup()
    widths = [max(len(row[i]) for row in [("measure", "value", "ratio", "target"), *rows])
              for i in range(4)]  # fmt: skip
    for row in [("measure", "value", "ratio", "target"), *rows]:
        sys.stdout.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + "\n"
        )
    sys.stdout.write(f"operator log: {work / 'operator.log'}\n")


if __name__ == "__main__":
    main()
