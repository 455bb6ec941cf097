"""Helpers of the operator tests: the operator as a real subprocess, kubectl shortcuts.

The operator runs as ``python -m blacklist_operator`` against the local control
plane, exactly as a developer runs it, with an address map that points each
BlacklistService at the test's PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from blacklist_contract.tables import LEDGER_TABLE
from blacklist_devtools import http, images
from blacklist_devtools.kube import Cluster, wait_until
from blacklist_devtools.net import free_port
from blacklist_operator.model.resource import DEFAULT_DATABASE_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD = REPO_ROOT / "crds" / "blacklistservices.yaml"


class OperatorProcess:
    """``python -m blacklist_operator`` in a subprocess, with its log in a file."""

    def __init__(self, cluster: Cluster, work_dir: Path, *arguments: str) -> None:
        self.cluster = cluster
        self.address_map = work_dir / "database-addresses.json"
        if not self.address_map.exists():
            self.address_map.write_text("{}")
        self.log_path = work_dir / f"operator-{time.monotonic_ns()}.log"
        self.arguments = arguments
        self.process: subprocess.Popen[bytes] | None = None
        self.liveness_port = free_port()
        self.metrics_port = free_port()

    def start(self) -> OperatorProcess:
        """Start the operator and wait until its liveness endpoint answers.

        Its metrics are served on ``metrics_port`` of the loopback address.
        """
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "blacklist_operator",
                    "--database-address-map",
                    str(self.address_map),
                    "--liveness",
                    f"http://127.0.0.1:{self.liveness_port}/healthz",
                    "--metrics-address",
                    f"127.0.0.1:{self.metrics_port}",
                    "--ban-poll-interval",
                    "2",
                    # hostPath's root init container: an image the node has, as an admin's.
                    f"--host-path-init-image={images.reference('postgres')}",
                    # The test bed's images for a resource that names none, as the chart sets.
                    "--default-service-image",
                    images.reference("service"),
                    "--default-database-image",
                    images.reference("postgres"),
                    *self.arguments,
                ],
                env=self.cluster.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_until(self._alive, timeout=60, interval=0.2):
            raise RuntimeError(f"the operator did not start; log:\n{self.log()}")
        return self

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the operator exited; log:\n{self.log()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def metrics(self) -> str:
        """The operator's ``/metrics`` page, in Prometheus text format."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as response:
            return str(response.read().decode())

    def map_database(self, namespace: str, name: str, host: str, port: int) -> None:
        """Point ``namespace/name``'s database at ``host:port`` (the file is re-read)."""
        entries = json.loads(self.address_map.read_text())
        entries[f"{namespace}/{name}"] = f"{host}:{port}"
        temporary = self.address_map.with_suffix(".tmp")
        temporary.write_text(json.dumps(entries))
        os.replace(temporary, self.address_map)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a crashed node would do."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def stacks(self) -> str:
        """Every thread's stack, as the operator writes them to its log on SIGUSR1."""
        assert self.process is not None
        if self.process.poll() is not None:
            return ""
        before = len(self.log())
        self.process.send_signal(signal.SIGUSR1)
        wait_until(lambda: "Thread 0x" in self.log()[before:], timeout=5, interval=0.1)
        time.sleep(0.5)  # the dump is written thread by thread
        return self.log()[before:]

    def log(self) -> str:
        """Everything the operator logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def install_crd(cluster: Cluster) -> None:
    """Apply the CRD and wait until the API serves it."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/blacklistservices.blacklist.dev",
        "--timeout=60s",
    )


def apply_manifest(cluster: Cluster, manifest: dict[str, Any]) -> str:
    """``kubectl apply`` a manifest given as a dict."""
    return cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def get_json(cluster: Cluster, *arguments: str) -> dict[str, Any] | None:
    """``kubectl get -o json``, or None when the object does not exist."""
    output = cluster.kubectl("get", *arguments, "-o", "json", "--ignore-not-found")
    return json.loads(output) if output.strip() else None


def blacklist_service(
    name: str, namespace: str, *, local: bool = True, **spec: Any
) -> dict[str, Any]:
    """A BlacklistService manifest; by default with the locally built images."""
    if local:
        built = images.spec_images()
        database = {**built["database"], **spec.get("database", {})}
        spec = {**built, **spec, "database": database}
    return {
        "apiVersion": "blacklist.dev/v1",
        "kind": "BlacklistService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def condition(body: dict[str, Any] | None, condition_type: str) -> dict[str, Any]:
    """The condition ``condition_type`` of a BlacklistService, or {}."""
    for item in ((body or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == condition_type:
            return dict(item)
    return {}


def wait_for(
    predicate: Any, timeout: float, what: str, operator: OperatorProcess | None = None
) -> None:
    """Wait for ``predicate``; fail naming ``what``, with the operator's log tail and stacks."""
    if not wait_until(predicate, timeout=timeout, interval=0.25):
        tail = stacks = ""
        if operator is not None:
            tail = operator.log()[-3000:]
            stacks = operator.stacks()
        pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tail}\n{stacks}")


def running_pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The pods matching ``selector`` that run with every container ready."""
    pods = (get_json(cluster, "pods", "-n", namespace, "-l", selector) or {}).get("items", [])
    return [
        pod
        for pod in pods
        if pod["status"].get("phase") == "Running"
        and not pod["metadata"].get("deletionTimestamp")
        and all(status.get("ready") for status in pod["status"].get("containerStatuses", []))
    ]


def _selector(name: str, component: str) -> str:
    return f"app.kubernetes.io/instance={name},app.kubernetes.io/component={component}"


def database_credentials(cluster: Cluster, namespace: str, name: str) -> tuple[str, str] | None:
    """(username, password) of Secret ``N-db``, or None when it is missing."""
    secret = get_json(cluster, "secret", f"{name}-db", "-n", namespace)
    if secret is None:
        return None
    data = secret["data"]
    return base64.b64decode(data["username"]).decode(), base64.b64decode(data["password"]).decode()


def ledger_addresses(cluster: Cluster, namespace: str, name: str) -> list[str] | None:
    """The ledger's addresses, read from the database pod with Secret N-db's password."""
    pods = running_pods(cluster, namespace, _selector(name, "database"))
    found = database_credentials(cluster, namespace, name)
    if len(pods) != 1 or found is None:
        return None
    user, password = found
    return read_ledger_addresses(pods[0]["status"]["podIP"], user, password, DEFAULT_DATABASE_NAME)


def read_ledger_addresses(host: str, user: str, password: str, database: str) -> list[str] | None:
    """Every ledger row's address in id order, or None while the database cannot be read."""
    try:
        with (
            psycopg2.connect(
                host=host, user=user, password=password, dbname=database, connect_timeout=3
            ) as connection,
            connection.cursor() as cursor,
        ):
            query = sql.SQL("SELECT ip_address FROM {} ORDER BY id")
            cursor.execute(query.format(sql.Identifier(LEDGER_TABLE)))
            return [str(row[0]) for row in cursor.fetchall()]
    except psycopg2.Error:
        return None


def hit_blacklisted(cluster: Cluster, namespace: str, name: str, source: str) -> bool:
    """Whether GET /blacklisted on a ready service pod, from ``source``, answers 444."""
    pods = running_pods(cluster, namespace, _selector(name, "service"))
    if not pods:
        return False
    url = f"http://{pods[0]['status']['podIP']}:5004/blacklisted"
    try:
        return http.get(url, source=source, timeout=5).status == 444
    except OSError:
        return False
