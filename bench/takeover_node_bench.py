"""Operator takeover on the real node: a new ban's wait when the leader's container dies or freezes.

Installs the chart with Helm (the operator watching only the bench's namespace)
and one BlacklistService with 2 service replicas, all containers on the local
node's containerd. Each round loses the operator, at once makes a ban with
``GET /blacklisted`` on replica A from a fresh client address, and times from
the loss until every replica refuses that address (403):

* baseline: ``replicaCount=1`` without leader election (the chart before
  leader election); its container's main process is SIGKILLed on the host (a
  crash) and the kubelet restarts it in place;
* kill: the chart's defaults (2 replicas, leader election); the container of
  the Lease's holder is SIGKILLed. The kubelet restarts it in place too, and a
  restarted process of the Lease's holder takes the Lease back at once
  (``lease.decide``), so whichever of it and the standby comes first leads;
* freeze: every process of the leader's container is SIGSTOPped (a frozen or
  partitioned node); the standby takes over once the Lease is left unrenewed
  for its duration. Then the frozen one is thawed: the fence promises that it
  exits (code 75) before writing, which the round records.

An operator of another user that watches every namespace (the e2e tests install
the chart so) serves this resource too, and would list the ban itself: each
round waits until no such process runs on the machine, and is measured again
when one appeared meanwhile or when every replica refused the ban before a new
leader held the Lease (impossible for the bench's own operator).

After each round the pod whose container was killed or frozen is deleted and
its replacement awaited, so every round's loss is a fresh pod's first crash
(the kubelet delays the restart of a container that keeps crashing, from 10 s
at its second crash). Everything is uninstalled at the end, also on failure.
Run: ``.venv/bin/python bench/takeover_node_bench.py`` (``--rounds``).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import functools
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import node, stack
from blacklist_devtools.http import get
from blacklist_devtools.kube import Cluster
from blacklist_devtools.network import NODE_ADDRESS, client_address
from blacklist_devtools.smtp import SmtpServer
from report import Row, append_json, print_table

CONTAINER = "operator"
SELECTOR = "app.kubernetes.io/component=operator"
# The chart's leader election, as its values.yaml sets it: the goal is a lease duration + 2 s.
LEADER_ELECTION = yaml.safe_load((stack.CHART / "values.yaml").read_text())["leaderElection"]
FIRST_CLIENT = 7000  # client addresses no other bench uses
ATTEMPTS = 5  # tries of a round that another user's operator may have served
Measured = TypeVar("Measured")


def watched_namespaces(argv: Sequence[str]) -> list[str] | None:
    """The ``--namespace`` patterns of an operator's command line; None when it watches all."""
    if "--all-namespaces" in argv:
        return None
    patterns = []
    for index, argument in enumerate(argv):
        if argument.startswith("--namespace="):
            patterns.append(argument.split("=", 1)[1])
        elif argument == "--namespace" and index + 1 < len(argv):
            patterns.append(argv[index + 1])
    return patterns or None  # without a namespace the operator serves the whole cluster


def operators_serving(namespace: str) -> list[int]:
    """PIDs of the operator processes on this machine (containers too) serving ``namespace``.

    Only those that match it by a pattern other than its exact name, or watch every
    namespace: the cluster-wide operators of other users' tests, not the bench's own.
    """
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except OSError:
            continue
        if "blacklist_operator" not in argv[:4]:
            continue
        patterns = watched_namespaces(argv)
        if patterns is None or any(
            pattern != namespace and fnmatch.fnmatchcase(namespace, pattern) for pattern in patterns
        ):
            found.append(int(proc.name))
    return found


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s; raise naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass(frozen=True)
class Loss:
    """One round: seconds from the loss until every replica refused the ban, and who led then."""

    seconds: float
    leader_after: str
    same_pod: bool
    led: float | None = None  # seconds until the Lease was acquired again (with election)


class Bench:
    """The release, the resource, and the operator's pods reached through the API and the CRI."""

    def __init__(self, cluster: Cluster, work: Path) -> None:
        self.cluster = cluster
        self.helm_path = local_cluster.binary("helm")
        self.crictl = local_cluster.binary("crictl")
        self.endpoint = f"unix://{node.containerd_socket(local_cluster.LOCAL_DIR)}"
        api = cluster.api_client()
        self.core = client.CoreV1Api(api)
        self.leases = client.CoordinationV1Api(api)
        suffix = uuid.uuid4().hex[:6]
        self.release = f"bench-takeover-{suffix}"
        self.operator_namespace = f"bench-takeover-operator-{suffix}"
        self.namespace = f"bench-takeover-{suffix}"
        self.smtp = SmtpServer(mailbox=work / "mailbox", host=NODE_ADDRESS)
        self.name = ""
        self.urls: list[str] = []
        self.clients = 0
        self.intruded = False  # another user's operator seen serving the namespace this round
        self.repeated = 0  # rounds measured again for that
        self.waited = 0.0  # seconds waited for such operators to end before a round

    # -- the release ---------------------------------------------------------------------------

    def helm_install(self, command: str, *values: str) -> None:
        """``helm install`` or ``upgrade`` of the chart, watching the bench's namespace only."""
        stack.helm(
            self.cluster, self.helm_path, command, self.release, str(stack.CHART),
            "--namespace", self.operator_namespace, "--wait", "--timeout", "180s",
            stack.TAKE_OWNERSHIP, *stack.operator_image_values(),
            "--set-json", f"operator.watchNamespaces={json.dumps([self.namespace])}", *values,
        )  # fmt: skip

    @contextlib.contextmanager
    def deployed(self) -> Iterator[None]:
        """One operator without leader election, the resource with 2 replicas Ready; undone."""
        self.smtp.start()
        try:
            self.cluster.kubectl("create", "namespace", self.operator_namespace)
            self.cluster.kubectl("create", "namespace", self.namespace)
            self.helm_install(
                "install", "--set", "replicaCount=1", "--set", "leaderElection.enabled=false"
            )
            resource = stack.example_resource(self.namespace, self.smtp.host, self.smtp.port, 2)
            self.name = resource["metadata"]["name"]
            self.cluster.kubectl("apply", "-f", "-", input=json.dumps(resource))
            self.settle()
            yield
        finally:
            self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)
            with contextlib.suppress(RuntimeError):  # the resources first: the operator
                wait(self.resource_gone, 120, "the BlacklistService deleted")  # removes finalizers
            with contextlib.suppress(RuntimeError):
                stack.helm(
                    self.cluster, self.helm_path, "uninstall", self.release,
                    "--namespace", self.operator_namespace, "--wait", "--timeout", "60s",
                )  # fmt: skip
            self.cluster.kubectl(
                "delete", "namespace", self.operator_namespace, "--wait=false", check=False
            )
            self.smtp.stop()

    def resource_gone(self) -> bool:
        listed = self.cluster.kubectl(
            "get", "blacklistservices", "-n", self.namespace, "-o", "name", check=False
        )
        return not listed.strip()

    def settle(self) -> None:
        """The resource Ready, every replica reached, and a ban propagated to all of them."""
        stack.wait_ready(self.cluster, self.namespace, self.name, stack.READY_TIMEOUT)
        self.urls = list(stack.instance(self.cluster, self.namespace, self.name).service_urls)
        source = self.ban()
        wait(lambda: self.refused_by_all(source), 60, "a ban on every replica")

    # -- the operator's pods -------------------------------------------------------------------

    def pods(self) -> list[dict[str, Any]]:
        """The operator's live pods, as the API has them."""
        found = stack.get_json(self.cluster, "pods", "-n", self.operator_namespace, "-l", SELECTOR)
        return [pod for pod in found["items"] if not pod["metadata"].get("deletionTimestamp")]

    def ready_pods(self) -> list[str]:
        """Names of the operator's pods whose container runs and is ready."""
        return [
            pod["metadata"]["name"]
            for pod in self.pods()
            if any(
                status["name"] == CONTAINER and status.get("ready")
                for status in pod["status"].get("containerStatuses", [])
            )
        ]

    def lease(self) -> dict[str, Any]:
        """The one Lease of the release: holderIdentity and acquireTime (empty without one)."""
        leases = self.leases.list_namespaced_lease(self.operator_namespace).items
        if not leases:
            return {}
        spec = leases[0].spec
        return {"holder": spec.holder_identity or "", "acquired": spec.acquire_time}

    def container_pids(self, pod: str) -> list[int]:
        """Host PIDs of every process of the operator container of ``pod``."""
        listing = self.crictl_output(
            "ps", "--state", "Running", "--name", f"^{CONTAINER}$",
            "--label", f"io.kubernetes.pod.namespace={self.operator_namespace}",
            "--label", f"io.kubernetes.pod.name={pod}", "--quiet",
        ).split()  # fmt: skip
        if len(listing) != 1:
            raise RuntimeError(f"expected one running operator container in {pod}: {listing}")
        main = int(json.loads(self.crictl_output("inspect", listing[0]))["info"]["pid"])
        # The container's cgroup (v1 "pids" hierarchy or the v2 one) lists all its processes.
        for line in Path(f"/proc/{main}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers in ("pids", ""):
                root = "/sys/fs/cgroup/pids" if controllers else "/sys/fs/cgroup"
                procs = Path(root + path) / "cgroup.procs"
                if procs.exists():
                    return [int(pid) for pid in procs.read_text().split()]
        return [main]

    def crictl_output(self, *arguments: str) -> str:
        """``crictl`` against the node's containerd; its stdout."""
        return subprocess.run(
            [self.crictl, "--runtime-endpoint", self.endpoint, *arguments],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    def restarts(self, pod: str) -> tuple[int, int | None]:
        """The operator container's restart count in ``pod`` and its last exit code."""
        found = self.core.read_namespaced_pod(pod, self.operator_namespace)
        for status in found.status.container_statuses or []:
            if status.name == CONTAINER:
                terminated = status.last_state.terminated if status.last_state else None
                return status.restart_count, terminated.exit_code if terminated else None
        return 0, None

    def replace(self, pod: str, replicas: int) -> None:
        """Delete ``pod`` (resetting the kubelet's crash back-off) and await a ready set again."""
        self.core.delete_namespaced_pod(pod, self.operator_namespace)
        wait(
            lambda: pod not in self.ready_pods() and len(self.ready_pods()) == replicas,
            120, "the operator's pods ready again",
        )  # fmt: skip
        if replicas > 1:
            wait(lambda: self.lease().get("holder") in self.ready_pods(), 60, "a leader")

    # -- bans ----------------------------------------------------------------------------------

    def ban(self) -> str:
        """Ban a fresh client address through replica A (it answers 444); the address."""
        self.clients += 1
        source = client_address(FIRST_CLIENT + self.clients)
        status = get(f"{self.urls[0]}/blacklisted", source=source).status
        if status != 444:
            raise RuntimeError(f"/blacklisted answered {status}")
        return source

    def refused_by_all(self, source: str) -> bool:
        return all(get(f"{url}/?n=1", source=source).status == 403 for url in self.urls)

    def seconds_until_refused(
        self, source: str, since: float, lease: dict[str, Any], limit: float = 90.0
    ) -> tuple[float, float | None]:
        """Seconds from ``since`` until every replica refuses ``source``; until a new leader.

        ``lease`` is the Lease before the loss (empty without election); the second
        figure is when it was first seen acquired anew (None without election).
        """
        waiting = list(self.urls)
        refused = 0.0
        led: float | None = None
        while waiting or (lease and led is None):
            self.intruded = self.intruded or bool(operators_serving(self.namespace))
            if lease and led is None and self.lease() not in ({}, lease):
                led = time.monotonic() - since
            if waiting:
                waiting = [
                    url for url in waiting if get(f"{url}/?n=1", source=source).status != 403
                ]
                if not waiting:
                    refused = time.monotonic() - since
            if time.monotonic() - since > limit:
                raise TimeoutError(f"the ban of {source} not on every replica in {limit:.0f} s")
            time.sleep(0.02)
        return refused, led

    # -- the rounds ----------------------------------------------------------------------------

    def alone(
        self, round_: Callable[[], Measured], impossible: Callable[[Measured], bool]
    ) -> Measured:
        """``round_`` measured while no other user's operator serves the namespace.

        The e2e tests install the chart watching every namespace, and such an operator
        serves this resource too: a ban it lists would be timed as the takeover. So
        each round waits until none runs, and is measured again when one was seen
        meanwhile, or when its figures are impossible for the bench's own operator.
        """
        for _ in range(ATTEMPTS):
            started = time.monotonic()
            wait(lambda: not operators_serving(self.namespace), 600, "other operators to end")
            self.waited += time.monotonic() - started
            self.intruded = False
            measured = round_()
            if not (self.intruded or operators_serving(self.namespace) or impossible(measured)):
                return measured
            self.repeated += 1
        raise RuntimeError(f"another operator served {self.namespace} in {ATTEMPTS} tries")

    def lose(self, pod: str, how: signal.Signals) -> tuple[Loss, list[int]]:
        """Send ``how`` to every process of ``pod``'s operator container; ban; time it."""
        pids = self.container_pids(pod)
        before = self.lease()
        if how == signal.SIGKILL:
            pids = pids[:1]  # the main process: a crash; its children die with the container
        for pid in pids:
            os.kill(pid, how)
        lost = time.monotonic()
        try:
            seconds, led = self.seconds_until_refused(self.ban(), lost, before)
        except BaseException:
            if how == signal.SIGSTOP:  # not left frozen: its pod must be deletable
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            raise
        holder = self.lease().get("holder", "")
        return Loss(seconds, holder, holder == pod, led), pids

    def baseline(self, rounds: int) -> list[Loss]:
        """The single operator's container SIGKILLed; the kubelet restarts it in place."""

        def once() -> Loss:
            (pod,) = self.ready_pods()
            source = self.ban()
            wait(lambda: self.refused_by_all(source), 30, "the operator serving")
            loss, _ = self.lose(pod, signal.SIGKILL)
            self.replace(pod, 1)
            return Loss(loss.seconds, pod, same_pod=True)

        return [self.alone(once, lambda _: False) for _ in range(rounds)]

    def elected(self) -> None:
        """Upgrade to the chart's defaults: 2 replicas with leader election."""
        self.helm_install("upgrade")
        wait(lambda: len(self.ready_pods()) == 2, 180, "2 operator pods ready")
        wait(lambda: self.lease().get("holder") in self.ready_pods(), 60, "a leader")
        self.settle()

    def takeover(self, how: signal.Signals) -> tuple[Loss, str]:
        """One round of losing the leader; for a freeze, what the thawed one did."""
        leader = self.lease()["holder"]
        source = self.ban()
        wait(lambda: self.refused_by_all(source), 30, "the leader serving")
        time.sleep(1.5)  # the standby has seen a renewal or two
        before, _ = self.restarts(leader)
        loss, pids = self.lose(leader, how)
        thawed = ""
        if how == signal.SIGSTOP:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            continued = time.monotonic()
            wait(lambda: self.restarts(leader)[0] > before, 60, "the thawed leader's exit")
            exited = time.monotonic() - continued
            code = self.restarts(leader)[1]
            kept = "kept" if self.lease().get("holder") == loss.leader_after else "TAKEN BACK"
            last = self.cluster.kubectl(
                "logs", "-n", self.operator_namespace, leader, "-c", CONTAINER, "--previous",
                "--tail=1", check=False,
            ).strip()  # fmt: skip
            thawed = (
                f"Thawed: exit {code} seen {exited:.1f} s after SIGCONT, the new leader's Lease"
                f" {kept}; its last log line: {last[-160:]!r}."
            )
        self.replace(leader, 2)
        return loss, thawed


def spread(losses: list[Loss]) -> str:
    values = [loss.seconds for loss in losses]
    return f"{min(values):.1f}-{max(values):.1f}"


def measure(bench: Bench, rounds: int) -> tuple[list[Row], list[str]]:
    """The baseline rounds, then the kill and the freeze rounds in turns; rows and notes."""
    restart = bench.baseline(rounds)
    bench.elected()
    losses: dict[str, list[Loss]] = {"SIGKILL": [], "SIGSTOP": []}
    notes: list[str] = []
    for how in [signal.SIGKILL, signal.SIGSTOP] * rounds:
        # Every replica refusing the ban before a new leader held the Lease: not ours.
        loss, thawed = bench.alone(
            functools.partial(bench.takeover, how),
            lambda measured: measured[0].seconds < (measured[0].led or 0.0),
        )
        losses[how.name].append(loss)
        leader = "same pod's restarted container" if loss.same_pod else "standby"
        notes.append(
            f"{how.name}: ban on every replica after {loss.seconds:.2f} s, the Lease acquired by"
            f" the {leader} after {loss.led or 0:.2f} s. {thawed}".strip()
        )
    baseline = statistics.median(loss.seconds for loss in restart)
    bound = float(LEADER_ELECTION["leaseDurationSeconds"]) + 2
    section = "operator takeover (real node)"
    rows = [
        Row(section, f"1 replica (no election), container SIGKILLed -> ban on every replica "
            f"(p50 of {rounds})", baseline, "s", "itself", baseline, "", spread(restart)),
        *[
            Row(section, f"2 replicas, leader's container {how} -> ban on every replica "
                f"(p50 of {rounds}; max {max(loss.seconds for loss in found):.1f} s)",
                statistics.median(loss.seconds for loss in found), "s",
                "1 replica SIGKILLed", baseline, f"<= {bound:g} s (lease + 2 s)", spread(found))
            for how, found in losses.items()
        ],
        *[
            Row(section, f"2 replicas, leader's container {how} -> Lease acquired anew "
                f"(p50 of {rounds}; {sum(not loss.same_pod for loss in found)} by the standby)",
                statistics.median(loss.led or 0.0 for loss in found), "s",
                "1 replica SIGKILLed", baseline,
                f"lease {LEADER_ELECTION['leaseDurationSeconds']} s, as expected",
                f"{min(loss.led or 0.0 for loss in found):.1f}-"
                f"{max(loss.led or 0.0 for loss in found):.1f}")
            for how, found in losses.items()
        ],
    ]  # fmt: skip
    return rows, notes


def main() -> None:
    """Install, measure, uninstall, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    state = local_cluster.up()
    cluster = Cluster(local_cluster.KUBECONFIG, state.server, local_cluster.binary("kubectl"))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-takeover-node-") as work:
        bench = Bench(cluster, Path(work))
        with bench.deployed():
            rows, notes = measure(bench, arguments.rounds)
    print_table(rows)
    for note in notes:
        print(f"  {note}")
    print(
        f"({time.monotonic() - started:.0f} s in all; {bench.waited:.0f} s of it waiting for other"
        f" users' cluster-wide operators to end; {bench.repeated} rounds measured again for them)"
    )
    append_json(arguments.json, rows)


if __name__ == "__main__":
    main()
