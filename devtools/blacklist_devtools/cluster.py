"""The local Kubernetes control plane: start, reuse, inspect and stop it.

``python -m blacklist_devtools.cluster up|down|status|env`` runs, on loopback, a
real etcd, kube-apiserver, kube-controller-manager and kube-scheduler (all
built from source by ``hack/toolchain.sh``), kwok, which plays the kubelet for
one fake Node so that pods are scheduled and become Running and Ready, and a
small hostPath volume provisioner. Every process is recorded by PID in
``.local/cluster/state.json``; ``down`` stops exactly those and removes their
state. ``up`` is idempotent: a healthy running cluster is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blacklist_devtools import processes
from blacklist_devtools.net import free_port, wait_for_port
from blacklist_devtools.pki import create_pki
from blacklist_devtools.processes import ProcessRecord

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_DIR = Path(os.environ.get("BLACKLIST_LOCAL_DIR", REPO_ROOT / ".local"))
BIN_DIR = Path(os.environ.get("BLACKLIST_BIN_DIR", REPO_ROOT / ".local" / "bin"))
STATE_DIR = LOCAL_DIR / "cluster"
KUBECONFIG = LOCAL_DIR / "kubeconfig"
STATE_FILE = STATE_DIR / "state.json"

NODE_NAME = "kwok-node-0"
POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
STORAGE_CLASS = "standard"
READY_TIMEOUT = 180.0


@dataclass
class ClusterState:
    """What ``up`` started and where it listens; persisted as JSON."""

    server: str
    token: str
    ports: dict[str, int]
    processes: list[ProcessRecord] = field(default_factory=list)

    def save(self) -> None:
        """Write the state file atomically."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        partial = STATE_FILE.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(self), indent=2))
        partial.replace(STATE_FILE)

    @classmethod
    def load(cls) -> ClusterState | None:
        """Read the state file, if there is one."""
        if not STATE_FILE.exists():
            return None
        raw = json.loads(STATE_FILE.read_text())
        return cls(
            server=raw["server"],
            token=raw["token"],
            ports=raw["ports"],
            processes=[
                ProcessRecord(**{**record, "argv": tuple(record.get("argv", ()))})
                for record in raw["processes"]
            ],
        )


def binary(name: str) -> str:
    """Path of a toolchain binary in ``.local/bin``, or a one-line hint to build it."""
    path = BIN_DIR / name
    if not path.exists():
        raise SystemExit(
            f"{name} is missing from {BIN_DIR}: run `make setup` to build the toolchain"
        )
    return str(path)


def log(message: str) -> None:
    """Progress line on stderr."""
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def readyz(server: str, token: str, timeout: float = 2.0) -> bool:
    """Tell whether the API server answers ``/readyz`` with ok."""
    context = ssl.create_default_context(cafile=str(STATE_DIR / "pki" / "ca.crt"))
    request = urllib.request.Request(
        f"{server}/readyz", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def healthy(state: ClusterState) -> bool:
    """Every recorded process runs and the API server is ready."""
    return all(record.alive() for record in state.processes) and readyz(state.server, state.token)


def write_kubeconfig(path: Path, server: str, token: str) -> None:
    """Write an admin kubeconfig that verifies the server against our CA."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "blacklist-local",
                "cluster": {
                    "server": server,
                    "certificate-authority": str(STATE_DIR / "pki" / "ca.crt"),
                },
            }
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {"name": "blacklist-local", "context": {"cluster": "blacklist-local", "user": "admin"}}
        ],
        "current-context": "blacklist-local",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(config, indent=2))
    partial.chmod(0o600)
    partial.replace(path)


def kwok_stages(path: Path) -> None:
    """Concatenate kwok's stage files (what kwok does to nodes and pods) into one config."""
    stages_dir = BIN_DIR.parent / "kwok-stages"
    files = sorted(stages_dir.glob("*.yaml"))
    if not files:
        raise SystemExit(f"kwok stages are missing from {stages_dir}: run `make setup`")
    path.write_text("\n---\n".join(stage.read_text() for stage in files))


def node_manifest() -> dict[str, Any]:
    """The fake Node that kwok manages; big enough for hundreds of pods."""
    capacity = {"cpu": "1000", "memory": "4Ti", "pods": "2000", "ephemeral-storage": "10Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]},
        "status": {
            "allocatable": capacity,
            "capacity": capacity,
            "nodeInfo": {
                "architecture": "amd64",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "operatingSystem": "linux",
            },
            "phase": "Running",
        },
    }


def storage_class_manifest() -> dict[str, Any]:
    """The default StorageClass, served by ``blacklist_devtools.provisioner``."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "local.blacklist.dev/hostpath",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def kubectl(*arguments: str, input_text: str | None = None) -> str:
    """Run kubectl against the local cluster and return its stdout."""
    completed = subprocess.run(
        [binary("kubectl"), "--kubeconfig", str(KUBECONFIG), *arguments],
        input=input_text,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(arguments)} failed: {completed.stderr.strip()}")
    return completed.stdout


def _start_control_plane() -> ClusterState:
    """Start every component from scratch and return the recorded state."""
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    pki = STATE_DIR / "pki"
    logs = STATE_DIR / "logs"
    create_pki(pki)
    ports = {
        name: free_port()
        for name in ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok")
    }
    token = secrets.token_hex(24)
    (STATE_DIR / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
    server = f"https://127.0.0.1:{ports['apiserver']}"
    state = ClusterState(server=server, token=token, ports=ports)

    def start(name: str, argv: Sequence[str]) -> None:
        state.processes.append(processes.spawn(name, argv, logs / f"{name}.log"))
        state.save()

    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
    start(
        "etcd",
        [
            binary("etcd"),
            "--name=node0",
            f"--data-dir={STATE_DIR / 'etcd'}",
            # A throwaway development cluster: speed over crash durability.
            "--unsafe-no-fsync=true",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=node0={peer_url}",
            "--listen-metrics-urls=",
            "--log-level=warn",
        ],
    )
    wait_for_port("127.0.0.1", ports["etcd"], 60)
    start(
        "kube-apiserver",
        [
            binary("kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            # Without a default route the API server cannot pick an address itself.
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={STATE_DIR / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # A loopback advertise address is only valid without the endpoint reconciler.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
        ],
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while not readyz(server, token):
        if not state.processes[-1].alive():
            raise SystemExit(f"kube-apiserver exited; see {logs / 'kube-apiserver.log'}")
        if time.monotonic() > deadline:
            raise SystemExit(f"kube-apiserver not ready in {READY_TIMEOUT:.0f} s; see {logs}")
        time.sleep(0.2)
    write_kubeconfig(KUBECONFIG, server, token)
    kubeconfig = str(KUBECONFIG)
    start(
        "kube-controller-manager",
        [
            binary("kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller_manager']}",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            # Benchmarks create hundreds of objects; client throttling would measure itself.
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
            "--concurrent-deployment-syncs=20",
            # kwok's node heartbeats lag when the machine is busy; a missed beat must not
            # mark every pod NotReady (kwok only readies Pending pods, so they would stay so).
            "--node-monitor-grace-period=1h",
            "--concurrent-replicaset-syncs=20",
        ],
    )
    start(
        "kube-scheduler",
        [
            binary("kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            "--leader-elect=false",
        ],
    )
    stages = STATE_DIR / "kwok-stages.yaml"
    kwok_stages(stages)
    start(
        "kwok",
        [
            binary("kwok"),
            f"--kubeconfig={kubeconfig}",
            "--manage-all-nodes=true",
            f"--config={stages}",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{ports['kwok']}",
        ],
    )
    start(
        "provisioner",
        [
            sys.executable,
            "-m",
            "blacklist_devtools.provisioner",
            "--kubeconfig",
            kubeconfig,
            "--volumes-dir",
            str(STATE_DIR / "volumes"),
        ],
    )
    kubectl("apply", "-f", "-", input_text=json.dumps(node_manifest()))
    kubectl("apply", "-f", "-", input_text=json.dumps(storage_class_manifest()))
    return state


def wait_node_ready(timeout: float) -> None:
    """Wait until kwok reports the fake Node Ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = kubectl(
                "get", "node", NODE_NAME,
                "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            )  # fmt: skip
        except RuntimeError:
            status = ""
        if status == "True":
            return
        time.sleep(0.2)
    raise SystemExit(f"node {NODE_NAME} not Ready in {timeout:.0f} s; see {STATE_DIR / 'logs'}")


def wait_default_service_account(timeout: float) -> None:
    """Wait until the controller manager created the ``default`` ServiceAccount."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kubectl("get", "serviceaccount", "default", "-n", "default")
            return
        except RuntimeError:
            time.sleep(0.2)
    raise SystemExit("the controller manager did not create ServiceAccount default/default")


def up() -> ClusterState:
    """Start the control plane, or reuse the one that runs; return its state."""
    started = time.monotonic()
    state = ClusterState.load()
    if state is not None and healthy(state):
        write_kubeconfig(KUBECONFIG, state.server, state.token)
        log(f"reusing the running cluster at {state.server} (kubeconfig: {KUBECONFIG})")
        return state
    if state is not None:
        log("a previous cluster is partly down; stopping what is left of it")
        down()
    log("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok")
    try:
        state = _start_control_plane()
        wait_node_ready(READY_TIMEOUT)
        wait_default_service_account(READY_TIMEOUT)
    except BaseException:
        down()
        raise
    log(
        f"cluster ready at {state.server} in {time.monotonic() - started:.1f} s "
        f"(kubeconfig: {KUBECONFIG})"
    )
    return state


def restart(component: str, while_down: Callable[[], None] | None = None) -> ProcessRecord:
    """Stop one component of the running cluster and start it again with the same flags.

    Fault tests use this to restart kube-apiserver under a running operator;
    ``while_down`` runs between the stop and the start.
    """
    state = ClusterState.load()
    if state is None:
        raise RuntimeError("no cluster is running")
    for index, record in enumerate(state.processes):
        if record.name == component:
            processes.stop(record)
            if while_down is not None:
                while_down()
            replacement = processes.spawn(record.name, record.argv, Path(record.log))
            state.processes[index] = replacement
            state.save()
            if component == "kube-apiserver":
                deadline = time.monotonic() + READY_TIMEOUT
                while not readyz(state.server, state.token):
                    if time.monotonic() > deadline:
                        raise TimeoutError("kube-apiserver did not come back")
                    time.sleep(0.1)
            return replacement
    raise KeyError(f"no component {component} in the running cluster")


def down() -> None:
    """Stop exactly the processes ``up`` recorded, newest first, and remove their state."""
    state = ClusterState.load()
    if state is None:
        log("no cluster state; nothing to stop")
        return
    for record in reversed(state.processes):
        processes.stop(record)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    KUBECONFIG.unlink(missing_ok=True)
    log("cluster stopped and its state removed")


def status() -> int:
    """Print each recorded process and whether the API server is ready; 0 when healthy."""
    state = ClusterState.load()
    if state is None:
        print("no cluster")
        return 1
    for record in state.processes:
        print(f"{record.name:<24} pid {record.pid:<8} {'running' if record.alive() else 'STOPPED'}")
    ready = readyz(state.server, state.token)
    print(f"{'kube-apiserver /readyz':<24} {state.server} {'ok' if ready else 'NOT READY'}")
    return 0 if healthy(state) else 1


def main(argv: list[str] | None = None) -> int:
    """Command line: ``up``, ``down`` or ``status``."""
    parser = argparse.ArgumentParser(description="The local Kubernetes control plane.")
    parser.add_argument("command", choices=["up", "down", "status"])
    arguments = parser.parse_args(argv)
    if arguments.command == "up":
        up()
        return 0
    if arguments.command == "down":
        down()
        return 0
    return status()


if __name__ == "__main__":
    sys.exit(main())
