"""Operator takeover: how long a new ban waits when the leading operator is killed or frozen.

Runs operator processes against the local control plane (as ``tests/operator``
does) with one BlacklistService whose ledger is a local PostgreSQL. Each round
inserts a ledger row right after the leader is lost and times it until the row
is in ConfigMap ``N-banlist``:

* baseline: one operator without leader election, SIGKILLed and started again
  at once (what the kubelet does for a crashed container in place; a lost node
  gets no such restart, its pod is rescheduled minutes later);
* SIGKILL of the leader of two replicas with ``--leader-election`` (defaults:
  lease 8 s, renew deadline 5 s, retry 1 s): the standby takes over;
* SIGSTOP of the leader (a frozen or partitioned node): the same.

Run: ``.venv/bin/python bench/takeover_bench.py`` (starts the cluster if needed).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from kubernetes import client, config

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import images
from blacklist_devtools.ledger_schema import LEDGER
from blacklist_devtools.net import free_port
from blacklist_devtools.postgres import PostgresServer
from blacklist_operator.controller.lease import ElectionTiming
from report import Row, append_json, print_table

REPO = Path(__file__).resolve().parents[1]
NAME = "takeover"
LEASE = "takeover-bench"


class Operator:
    """``python -m blacklist_operator`` in a subprocess, its metrics on a port of its own."""

    def __init__(self, bench: Bench, *arguments: str) -> None:
        self.metrics_port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "blacklist_operator",
                "--namespace", bench.namespace,
                "--database-address-map", str(bench.address_map),
                "--metrics-address", f"127.0.0.1:{self.metrics_port}",
                "--ban-poll-interval", "2",
                *arguments,
            ],
            env={"KUBECONFIG": bench.kubeconfig, "PATH": "/usr/bin:/bin"},
            stdout=(bench.work / "operator.log").open("ab"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def leads(self) -> bool:
        """Whether its ``blacklist_operator_leader`` gauge is 1 (False while it starts)."""
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=1) as response:
                text = response.read().decode()
        except OSError:
            return False
        found = re.search(r"^blacklist_operator_leader (\S+)$", text, re.MULTILINE)
        return found is not None and float(found.group(1)) == 1.0

    def answers(self) -> bool:
        """Whether its metrics are served: imported, configured, waiting or leading."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1):
                return True
        except OSError:
            return False

    def end(self) -> None:
        """SIGKILL (after SIGCONT, in case it is stopped) and reap."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=10)


class Bench:
    """The cluster, the ledger and the BlacklistService the operators serve."""

    def __init__(self, work: Path) -> None:
        local_cluster.up()
        self.work = work
        self.kubeconfig = str(local_cluster.KUBECONFIG)
        self.kubectl = local_cluster.binary("kubectl")
        self.core = client.CoreV1Api(config.new_client_from_config(config_file=self.kubeconfig))
        self.namespace = f"bench-takeover-{uuid.uuid4().hex[:6]}"
        self.address_map = work / "addresses.json"
        self.postgres = PostgresServer()
        self.postgres.start()
        with self.postgres.connect() as connection, connection.cursor() as cursor:
            cursor.execute(LEDGER)
        self.address_map.write_text(
            json.dumps({f"{self.namespace}/{NAME}": f"{self.postgres.host}:{self.postgres.port}"})
        )
        self.rows = 0

    def apply(self, manifest: dict[str, object]) -> None:
        subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, "apply", "-f", "-"],
            input=json.dumps(manifest).encode(), check=True, capture_output=True,
        )  # fmt: skip

    def deploy(self) -> None:
        """The namespace, the adopted database Secret and the BlacklistService."""
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
        encoded = {
            "username": base64.b64encode(self.postgres.user.encode()).decode(),
            "password": base64.b64encode(self.postgres.password.encode()).decode(),
        }
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{NAME}-db", "namespace": self.namespace},
                "data": encoded,
            }
        )
        spec = images.spec_images()
        spec["database"]["name"] = self.postgres.database
        self.apply(
            {
                "apiVersion": "blacklist.dev/v1",
                "kind": "BlacklistService",
                "metadata": {"name": NAME, "namespace": self.namespace},
                "spec": spec,
            }
        )

    def ready(self) -> bool:
        """Both Deployments available: a new leader connects to the ledger at once."""
        output = subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, "get", "bls", NAME,
             "-n", self.namespace, "-o", "json"],
            capture_output=True, check=False,
        ).stdout  # fmt: skip
        conditions = (json.loads(output or b"{}").get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def ban(self) -> str:
        """Insert one ledger row (and NOTIFY); its address."""
        self.rows += 1
        address = f"198.18.{self.rows // 256}.{self.rows % 256}"
        with self.postgres.connect() as connection, connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO denied_access_ledger (event_id, path, ip_address, time) "
                "VALUES (%s, '/blacklisted', %s, now())",
                (uuid.uuid4().hex, address),
            )
            cursor.execute("NOTIFY denied_access_ledger")
        return address

    def listed(self, address: str) -> bool:
        try:
            shard = self.core.read_namespaced_config_map(f"{NAME}-banlist", self.namespace)
        except client.ApiException:
            return False
        return address in (shard.data or {}).get("addresses", "").split()

    def seconds_until_listed(
        self, address: str, since: float, successor: Operator | None = None, limit: float = 60.0
    ) -> tuple[float, float]:
        """Seconds from ``since`` until ``address`` is listed, and until ``successor`` led."""
        leading = 0.0
        while not self.listed(address):
            if successor is not None and not leading and successor.leads():
                leading = time.monotonic() - since
            if time.monotonic() - since > limit:
                return limit, leading
            time.sleep(0.02)
        return time.monotonic() - since, leading or time.monotonic() - since

    def close(self) -> None:
        subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, "delete", "namespace",
             self.namespace, "--wait=false"],
            capture_output=True, check=False,
        )  # fmt: skip
        self.postgres.stop()
        self.postgres.destroy()


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def elected(bench: Bench, identity: str) -> Operator:
    return Operator(
        bench,
        "--leader-election",
        f"--leader-election-namespace={bench.namespace}",
        f"--leader-election-lease-name={LEASE}",
        f"--leader-election-identity={identity}",
    )


def measure(bench: Bench, rounds: int) -> list[Row]:
    """The baseline rounds, then the kill and the freeze rounds with two replicas."""
    single = Operator(bench)
    wait(bench.ready, 300, "the BlacklistService Ready")
    restart: list[float] = []
    for _ in range(rounds):
        synced = bench.ban()
        wait(lambda: bench.listed(synced), 60, "a ban written")  # noqa: B023 (used at once)
        single.end()
        lost = time.monotonic()
        address = bench.ban()
        single = Operator(bench)
        restart.append(bench.seconds_until_listed(address, lost)[0])
    single.end()

    leader = elected(bench, "replica-0")
    wait(leader.leads, 30, "the first leader")
    results: dict[str, list[float]] = {"SIGKILL": [], "SIGSTOP": []}
    leading: dict[str, list[float]] = {"SIGKILL": [], "SIGSTOP": []}
    for index, how in enumerate(["SIGKILL", "SIGSTOP"] * rounds, start=1):
        standby = elected(bench, f"replica-{index}")
        wait(standby.answers, 30, "the standby up")
        address = bench.ban()
        wait(lambda: bench.listed(address), 30, "the leader's ban")  # noqa: B023 (used at once)
        time.sleep(1.5)  # the standby has seen a renewal or two
        leader.process.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGSTOP)
        lost = time.monotonic()
        address = bench.ban()
        listed, led = bench.seconds_until_listed(address, lost, standby)
        results[how].append(listed)
        leading[how].append(led)
        leader.end()
        leader = standby
    leader.end()

    timing = ElectionTiming()
    baseline = statistics.median(restart)
    bound = f"<= {timing.lease_duration + 2} s (lease + 2 s)"
    section = "operator takeover"
    return [
        Row(section, f"1 replica SIGKILLed, restarted at once -> ban listed (p50 of {rounds})",
            baseline, "s", "itself", baseline, "", f"{min(restart):.1f}-{max(restart):.1f}"),
        *[
            row
            for how, values in results.items()
            for row in (
                Row(section, f"leader {how} -> standby leading (p50 of {rounds})",
                    statistics.median(leading[how]), "s", "1 replica restarted", baseline,
                    f"<= {timing.lease_duration} s (lease)",
                    f"{min(leading[how]):.1f}-{max(leading[how]):.1f}"),
                Row(section, f"leader {how} -> standby lists the ban (p50 of {rounds})",
                    statistics.median(values), "s", "1 replica restarted", baseline, bound,
                    f"{min(values):.1f}-{max(values):.1f}"),
            )
        ],
    ]  # fmt: skip


def main() -> None:
    """Measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-takeover-"))
    bench = Bench(work)
    subprocess.run(
        [bench.kubectl, "--kubeconfig", bench.kubeconfig, "apply", "--server-side",
         "--force-conflicts", "-f", str(REPO / "crds")],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        bench.deploy()
        rows = measure(bench, arguments.rounds)
    finally:
        bench.close()
    print_table(rows)
    append_json(arguments.json, rows)
    print(f"operator log: {work / 'operator.log'}")


if __name__ == "__main__":
    main()
