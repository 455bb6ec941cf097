"""The local Kubernetes cluster: start, reuse, inspect and stop it.

``python -m blacklist_devtools.cluster up|down|status`` runs a real etcd,
kube-apiserver, kube-controller-manager and kube-scheduler (all built from
source by ``hack/toolchain.sh``) and one real node (``node.py``: containerd
with runc, CNI, kubelet, kube-proxy and CoreDNS) whose address lives on a
bridge the cluster creates. Beside it, kwok simulates a tainted node that
only the scale benchmarks use, and a small hostPath provisioner serves the
default StorageClass. Every process is recorded by PID in
``.local/cluster/state.json``; ``down`` stops exactly those, removes what the
node made on the host (bridges, namespace, firewall rules, mounts, cgroups)
and restores the sysctls it changed. ``up`` is idempotent: a healthy running
cluster is reused.

``BLACKLIST_NODE=none`` starts the control plane and the simulated node only,
for a second, private cluster beside the one that owns the real node.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from blacklist_devtools import controlplane, network, node, nodeconfig, processes, registry
from blacklist_devtools.controlplane import SIMULATED_NODE_NAME
from blacklist_devtools.kube import KubectlError, run_kubectl
from blacklist_devtools.net import free_port, wait_for_port
from blacklist_devtools.network import NODE_ADDRESS
from blacklist_devtools.pki import create_pki
from blacklist_devtools.processes import ProcessRecord

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_DIR = Path(os.environ.get("BLACKLIST_LOCAL_DIR", REPO_ROOT / ".local"))
BIN_DIR = Path(os.environ.get("BLACKLIST_BIN_DIR", REPO_ROOT / ".local" / "bin"))
STATE_DIR = LOCAL_DIR / "cluster"
KUBECONFIG = LOCAL_DIR / "kubeconfig"
STATE_FILE = STATE_DIR / "state.json"

READY_TIMEOUT = 180.0
# The real node is Ready in about 5 s; past this something is wrong, and a clean start helps.
NODE_READY_TIMEOUT = 90.0
# The node's components, each with its own API identity: (user, groups) by component.
NODE_IDENTITIES = {
    "node": (f"system:node:{nodeconfig.NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", ""),
    "coredns": ("system:coredns", ""),
    "network-policies": ("system:network-policies", ""),
}


def node_wanted() -> bool:
    """Whether ``up`` starts the real node (``BLACKLIST_NODE=none`` leaves it out)."""
    return os.environ.get("BLACKLIST_NODE", "real") != "none"


@dataclass
class ClusterState:
    """What ``up`` started and where it listens; persisted as JSON."""

    server: str
    token: str
    ports: dict[str, int]
    processes: list[ProcessRecord] = field(default_factory=list)
    node: bool = False

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
            node=bool(raw.get("node", False)),
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
    """Write a kubeconfig for ``token``'s user that verifies the server against our CA.

    The CA is embedded rather than named by path: checkouts that share ``.local/``
    (a worktree linking it) all write the same file, valid from anywhere.
    """
    authority = base64.b64encode((STATE_DIR / "pki" / "ca.crt").read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "blacklist-local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": authority,
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


def kubectl(*arguments: str, input_text: str | None = None) -> str:
    """Run kubectl against the local cluster and return its stdout (:class:`KubectlError`)."""
    return run_kubectl(binary("kubectl"), KUBECONFIG, *arguments, input=input_text)


def _start_control_plane(with_node: bool) -> ClusterState:
    """Start every component from scratch and return the recorded state."""
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    pki = STATE_DIR / "pki"
    logs = STATE_DIR / "logs"
    STATE_DIR.mkdir(parents=True)
    if with_node:
        # Before anything changes them: restored by `down`.
        network.record_sysctls(STATE_DIR / "sysctls.json")
        network.create()
    create_pki(pki, nodeconfig.NODE_NAME, NODE_ADDRESS)
    ports = {
        name: free_port()
        for name in (
            "etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok",
            "kubelet_healthz", "proxy_healthz", "proxy_metrics", "dns_health", "dns_ready",
            "policy_metrics",
        )
    }  # fmt: skip
    # One bearer token per identity: the admin and each of the node's components.
    identities = {"admin": ("admin", "system:masters"), **NODE_IDENTITIES}
    tokens = {component: secrets.token_hex(24) for component in identities}
    # token,user,uid[,"group"]: the format of --token-auth-file.
    (STATE_DIR / "tokens.csv").write_text(
        "".join(
            f"{tokens[component]},{user},{component}" + (f',"{groups}"' if groups else "") + "\n"
            for component, (user, groups) in identities.items()
        )
    )
    # With the node, the API server listens on the node's address, where pods reach it
    # through the `kubernetes` Service; without it, on loopback only.
    address = NODE_ADDRESS if with_node else "127.0.0.1"
    server = f"https://{address}:{ports['apiserver']}"
    state = ClusterState(server=server, token=tokens["admin"], ports=ports, node=with_node)

    def start(name: str, argv: Sequence[str]) -> None:
        state.processes.append(processes.spawn(name, argv, logs / f"{name}.log"))
        state.save()

    start("etcd", controlplane.etcd_argv(binary("etcd"), STATE_DIR / "etcd", ports))
    wait_for_port("127.0.0.1", ports["etcd"], 60)
    start(
        "kube-apiserver",
        controlplane.apiserver_argv(
            binary("kube-apiserver"), address, STATE_DIR / "tokens.csv", pki, ports, with_node
        ),
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while not readyz(server, tokens["admin"]):
        if not state.processes[-1].alive():
            raise SystemExit(f"kube-apiserver exited; see {logs / 'kube-apiserver.log'}")
        if time.monotonic() > deadline:
            raise SystemExit(f"kube-apiserver not ready in {READY_TIMEOUT:.0f} s; see {logs}")
        time.sleep(0.2)
    write_kubeconfig(KUBECONFIG, server, tokens["admin"])
    start(
        "kube-controller-manager",
        controlplane.controller_manager_argv(
            binary("kube-controller-manager"), KUBECONFIG, pki, ports
        ),
    )
    start(
        "kube-scheduler", controlplane.scheduler_argv(binary("kube-scheduler"), KUBECONFIG, ports)
    )
    if with_node:
        kubeconfigs = {}
        for user in NODE_IDENTITIES:
            kubeconfigs[user] = STATE_DIR / f"{user}.kubeconfig"
            write_kubeconfig(kubeconfigs[user], server, tokens[user])
        node.start(LOCAL_DIR, STATE_DIR, pki, ports, kubeconfigs, start, binary)
        kubectl("apply", "-f", "-", input_text=json.dumps(
            {"apiVersion": "v1", "kind": "List",
             "items": nodeconfig.dns_manifests() + nodeconfig.network_policy_rbac()}
        ))  # fmt: skip
    stages = STATE_DIR / "kwok-stages.yaml"
    kwok_stages(stages)
    start("kwok", controlplane.kwok_argv(binary("kwok"), KUBECONFIG, stages, ports))
    start("provisioner", controlplane.provisioner_argv(KUBECONFIG, STATE_DIR / "volumes"))
    kubectl("apply", "-f", "-", input_text=json.dumps(controlplane.simulated_node_manifest()))
    kubectl("apply", "-f", "-", input_text=json.dumps(controlplane.storage_class_manifest()))
    return state


class NodeNotReady(SystemExit):
    """A node did not report Ready in time."""


def wait_node_ready(name: str, timeout: float) -> None:
    """Wait until the Node ``name`` reports Ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = kubectl(
                "get", "node", name,
                "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            )  # fmt: skip
        except KubectlError:
            status = ""
        if status == "True":
            return
        time.sleep(0.2)
    raise NodeNotReady(f"node {name} not Ready in {timeout:.0f} s; see {STATE_DIR / 'logs'}")


def wait_default_service_account(timeout: float) -> None:
    """Wait until the controller manager created the ``default`` ServiceAccount."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kubectl("get", "serviceaccount", "default", "-n", "default")
            return
        except KubectlError:
            time.sleep(0.2)
    raise SystemExit("the controller manager did not create ServiceAccount default/default")


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """Hold the cluster's lock: one ``up`` or ``down`` at a time (a demo and a test run, say)."""
    LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    with (LOCAL_DIR / "cluster.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def up() -> ClusterState:
    """Start the cluster, or reuse the one that runs; return its state."""
    with _exclusive():
        return _up()


def _up() -> ClusterState:
    started = time.monotonic()
    state = ClusterState.load()
    if state is not None and healthy(state):
        write_kubeconfig(KUBECONFIG, state.server, state.token)
        log(f"reusing the running cluster at {state.server} (kubeconfig: {KUBECONFIG})")
        return state
    if state is not None:
        log("a previous cluster is partly down; stopping what is left of it")
        _down()
    with_node = node_wanted()
    if with_node:
        registry.up()  # The node pulls every image from it, the pause image first.
    log(
        "starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler"
        + (", the node (containerd, kubelet, kube-proxy, CoreDNS)" if with_node else "")
        + ", kwok"
    )
    for attempt in (1, 2):
        try:
            state = _start_control_plane(with_node)
            if with_node:
                wait_node_ready(nodeconfig.NODE_NAME, NODE_READY_TIMEOUT)
            wait_node_ready(SIMULATED_NODE_NAME, READY_TIMEOUT)
            wait_default_service_account(READY_TIMEOUT)
            break
        except BaseException as error:
            # Keep what the components said: `down` removes the state directory with the logs.
            failed = LOCAL_DIR / "cluster-failed-logs"
            shutil.rmtree(failed, ignore_errors=True)
            with contextlib.suppress(OSError):
                shutil.copytree(STATE_DIR / "logs", failed)
            log(f"the cluster did not start ({error}); its logs are kept in {failed}")
            _down()
            if attempt == 2 or not isinstance(error, NodeNotReady):
                raise
            # Seen once after a `down` of a cluster that had run many pods: the node never
            # became Ready, and a second down-and-up (which cleans the host again) did.
            log("starting everything once more, after a second clean-up of the host")
    assert state is not None  # The loop either broke with a state or raised.
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
    with _exclusive():
        _down()


def _down() -> None:
    state = ClusterState.load()
    if state is None:
        log("no cluster state; nothing to stop")
        return
    for record in reversed(state.processes):
        if record.name == "containerd":
            # The kubelet is gone: take every pod down while containerd still runs.
            node.remove_pods(LOCAL_DIR, str(BIN_DIR / "crictl"))
        processes.stop(record, grace=30 if record.name == "containerd" else 10)
    if state.node:
        node.teardown_host(LOCAL_DIR, STATE_DIR, str(BIN_DIR / "kube-proxy"))
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
    parser = argparse.ArgumentParser(description="The local Kubernetes cluster.")
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
