"""Two operators with leader election against the real API server: one serves, the other takes over.

Both run as ``python -m blacklist_operator --leader-election`` on a Lease in the
test's namespace, with the chart's default timing (lease 8 s, renew deadline
5 s, retry 1 s). The ban list is fed from a real PostgreSQL ledger, as in
``test_banlist_sync.py``:

* SIGKILL of the leader (a crashed process, a lost node): a ledger row written
  right after the kill reaches ConfigMap ``N-banlist`` within lease duration + 2 s;
* SIGSTOP of the leader (a frozen or partitioned node): the standby takes over;
  thawed, the old leader exits without writing, although a NOTIFY and a new row
  wait for it on its open ledger connection.

Run them alone on the cluster: an operator installed cluster-wide by another test
(``tests/e2e``, ``tests/chart/test_install.py``) would serve these namespaces too and
write the ban list from the in-cluster database.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from blacklist_devtools.kube import Cluster, wait_until
from blacklist_devtools.postgres import PostgresServer
from blacklist_operator.controller.lease import ElectionTiming
from blacklist_operator.kube.fence import LOST_LEADERSHIP_EXIT_CODE
from tests.operator.helpers import OperatorProcess, condition, get_json, wait_for
from tests.operator.test_banlist_sync import banned_entries, create_table, deploy, insert, status

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]

LEASE = "blacklist-operator-test"
TIMING = ElectionTiming()  # the chart's defaults
BANLIST_SHARD = "bl-banlist"


@pytest.fixture
def ledger(postgres: PostgresServer) -> PostgresServer:
    """An empty ledger table (dropped first, so each test starts clean)."""
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_ledger")
    create_table(postgres)
    return postgres


class Replicas:
    """The operator replicas a test started, each with its own identity in the Lease."""

    def __init__(self, cluster: Cluster, work_dir: Path, namespace: str) -> None:
        self.cluster, self.work_dir, self.namespace = cluster, work_dir, namespace
        self.started: list[OperatorProcess] = []

    def start(self, identity: str) -> OperatorProcess:
        """One more replica; it answers its liveness endpoint whether it leads or waits."""
        operator = OperatorProcess(
            self.cluster,
            self.work_dir,
            "--namespace",
            self.namespace,
            "--leader-election",
            f"--leader-election-namespace={self.namespace}",
            f"--leader-election-lease-name={LEASE}",
            f"--leader-election-identity={identity}",
        )
        self.started.append(operator)
        return operator.start()

    def stop(self) -> None:
        for operator in self.started:
            if operator.process is not None and operator.process.poll() is None:
                operator.process.send_signal(signal.SIGCONT)
            operator.stop()


@pytest.fixture
def replicas(crd: Cluster, tmp_path: Path, namespace: str) -> Iterator[Replicas]:
    started = Replicas(crd, tmp_path, namespace)
    yield started
    started.stop()


def leads(operator: OperatorProcess) -> bool:
    """Whether the replica's ``blacklist_operator_leader`` gauge is 1."""
    found = re.search(r"^blacklist_operator_leader (\S+)$", operator.metrics(), re.MULTILINE)
    return found is not None and float(found.group(1)) == 1.0


def holder(cluster: Cluster, namespace: str) -> str | None:
    lease = get_json(cluster, "lease", LEASE, "-n", namespace)
    return None if lease is None else lease["spec"].get("holderIdentity")


def banlist_writes(cluster: Cluster, namespace: str) -> tuple[str, list[tuple[str, str, str]]]:
    """Shard 0's resource version and managedFields: every write leaves its mark there."""
    shard = client.CoreV1Api(cluster.api_client()).read_namespaced_config_map(
        BANLIST_SHARD, namespace
    )
    fields = shard.metadata.managed_fields or []
    managers = [(entry.manager, entry.operation, str(entry.time)) for entry in fields]
    return shard.metadata.resource_version, managers


def serving_pair(
    replicas: Replicas, ledger: PostgresServer, namespace: str
) -> tuple[OperatorProcess, OperatorProcess]:
    """Replica a leading (the first to start), replica b waiting, a BlacklistService synced."""
    first = replicas.start("operator-a")
    wait_for(lambda: leads(first), 15, "replica a leading", first)
    second = replicas.start("operator-b")
    assert holder(replicas.cluster, namespace) == "operator-a"
    insert(ledger, ["192.0.2.1"])
    deploy(first, ledger, namespace)
    wait_for(lambda: banned_entries(first, namespace) == ["192.0.2.1"], 30, "the first sync", first)
    # Both Deployments available: a new leader connects to the ledger as soon as it lists them.
    wait_for(
        lambda: condition(status(first, namespace), "Ready").get("status") == "True",
        180,
        "Ready (both Deployments available)",
        first,
    )
    # Only one serves: the standby never started kopf, so it neither led nor took anything up.
    assert not leads(second)
    assert "Waiting as a standby for lease" in second.log()
    assert "Became the leader" not in second.log()
    assert re.search(r"^blacklist_operator_instances 0\.0$", second.metrics(), re.MULTILINE)
    return first, second


def test_a_killed_leader_is_replaced_within_the_lease_duration(
    replicas: Replicas, ledger: PostgresServer, namespace: str
) -> None:
    leader, standby = serving_pair(replicas, ledger, namespace)

    leader.kill()
    killed = time.monotonic()
    insert(ledger, ["198.51.100.9"])
    bound = TIMING.lease_duration + 2
    took_over: list[float] = []
    configmaps = client.CoreV1Api(replicas.cluster.api_client())

    def written() -> bool:
        # Read through one open connection, not kubectl, so the figure is the operator's.
        if not took_over and leads(standby):
            took_over.append(time.monotonic() - killed)
        shard = configmaps.read_namespaced_config_map(BANLIST_SHARD, namespace)
        return "198.51.100.9" in shard.data["addresses"].split()

    # Wait longer than the bound, to report the time it took when it is too slow.
    wait_until(written, bound + 10, interval=0.05)
    took = time.monotonic() - killed
    print(
        f"SIGKILL of the leader -> standby leading: {took_over[0] if took_over else -1:.1f} s, "
        f"new ban in {BANLIST_SHARD}: {took:.1f} s"
    )
    assert took <= bound, f"the new leader wrote the ban {took:.1f} s after the kill"
    assert sorted(banned_entries(standby, namespace)) == ["192.0.2.1", "198.51.100.9"]
    assert leads(standby)
    assert holder(replicas.cluster, namespace) == "operator-b"


def test_a_frozen_leader_is_replaced_and_writes_nothing_once_thawed(
    replicas: Replicas, ledger: PostgresServer, namespace: str
) -> None:
    old, new = serving_pair(replicas, ledger, namespace)
    assert old.process is not None
    assert new.process is not None

    old.process.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    wait_for(lambda: leads(new), TIMING.lease_duration + 2, "the standby leading", new)
    print(f"SIGSTOP of the leader -> standby leading: {time.monotonic() - frozen:.1f} s")
    insert(ledger, ["198.51.100.20"])
    wait_for(
        lambda: "198.51.100.20" in banned_entries(new, namespace),
        5,
        "the new leader's first ban",
        new,
    )
    assert holder(replicas.cluster, namespace) == "operator-b"

    # Freeze the new leader too, so nothing else writes while the old one is thawed; then
    # give the old one a reason to write: a row and a NOTIFY on its ledger connection.
    new.process.send_signal(signal.SIGSTOP)
    new_frozen = time.monotonic()
    before = banlist_writes(replicas.cluster, namespace)
    insert(ledger, ["203.0.113.30"])
    old.process.send_signal(signal.SIGCONT)
    time.sleep(3)  # unfenced, it would have read the row and written it by now
    assert banlist_writes(replicas.cluster, namespace) == before
    assert "203.0.113.30" not in banned_entries(new, namespace)
    assert old.process.wait(timeout=10) == LOST_LEADERSHIP_EXIT_CODE
    assert "Lost the leadership" in old.log()

    # The new leader, frozen past its own renew deadline, fences itself the same way once
    # thawed; a fresh replica then takes over and the waiting row is not lost.
    time.sleep(max(0.0, new_frozen + TIMING.renew_deadline + 0.5 - time.monotonic()))
    new.process.send_signal(signal.SIGCONT)
    assert new.process.wait(timeout=10) == LOST_LEADERSHIP_EXIT_CODE
    assert banlist_writes(replicas.cluster, namespace) == before
    third = replicas.start("operator-c")
    wait_for(
        lambda: "203.0.113.30" in banned_entries(third, namespace),
        TIMING.lease_duration + 20,
        "the waiting row written by the next leader",
        third,
    )
    assert holder(replicas.cluster, namespace) == "operator-c"


def test_a_standby_stops_at_once_on_sigterm(replicas: Replicas, namespace: str) -> None:
    """A standby is PID 1 in its pod: it must handle SIGTERM itself, or a delete waits 30 s."""
    leader = replicas.start("operator-a")
    wait_for(lambda: leads(leader), 15, "replica a leading", leader)
    standby = replicas.start("operator-b")
    wait_for(lambda: "Waiting as a standby for lease" in standby.log(), 15, "b waiting", standby)
    assert standby.process is not None
    stopped = time.monotonic()
    standby.process.send_signal(signal.SIGTERM)
    assert standby.process.wait(timeout=5) == 0  # handled: not killed by the signal (-15)
    assert time.monotonic() - stopped < 3
    assert "Stopped while waiting as a standby" in standby.log()
    assert holder(replicas.cluster, namespace) == "operator-a"
    assert leads(leader)


def test_a_leader_stopped_cleanly_hands_over_at_once(replicas: Replicas, namespace: str) -> None:
    leader = replicas.start("operator-a")
    wait_for(lambda: leads(leader), 15, "replica a leading", leader)
    standby = replicas.start("operator-b")
    stopped = time.monotonic()
    leader.stop()  # SIGTERM, as a rolling update or a drain sends it
    assert leader.process is not None
    assert leader.process.returncode == 0
    assert "Released lease" in leader.log()
    assert "Lost the leadership" not in leader.log()
    # Released: taken at the standby's next look (the watch wakes it), not a lease duration later.
    wait_for(lambda: leads(standby), TIMING.lease_duration, "the standby leading", standby)
    took = time.monotonic() - stopped
    print(f"SIGTERM of the leader -> standby leading: {took:.1f} s")
    assert took < TIMING.lease_duration
    assert holder(replicas.cluster, namespace) == "operator-b"
