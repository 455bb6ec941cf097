"""The local cluster's real node: start it, reach into it, and take it down.

Beside the control plane, ``cluster up`` starts one real node on this
machine: containerd with runc runs the pods as containers on a CNI bridge,
the kubelet (cgroupfs driver) manages them, kube-proxy (iptables mode) serves
ClusterIPs and NodePorts on the node's address, CoreDNS answers for
``cluster.local`` as the ``kube-dns`` Service, and kube-network-policies
enforces NetworkPolicies. The product's images, built by ``make images`` and
pushed to the test bed's registry (``registry.py``), are pulled by containerd
as on any cluster: a ``hosts.toml`` names the registry, and another makes it
the node's mirror of docker.io, so a short name (``flask-blacklist-svc:v1``)
is pulled from it too.

The configuration is built by ``nodeconfig.py`` (pure functions); this module
writes it, starts the processes (``cluster.py`` records their PIDs), and
undoes on the way down what they did to the host. See devtools/README.md, "The
local environment: what is real", for the whole picture.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from blacklist_devtools import network, registry
from blacklist_devtools.network import NODE_ADDRESS
from blacklist_devtools.nodeconfig import (
    DOCKER_HUB,
    NODE_NAME,
    POLICY_TABLE,
    cni_config,
    containerd_config,
    corefile,
    kube_proxy_config,
    kubelet_config,
    network_policy_argv,
    registry_hosts_toml,
)

CONTAINERD_NAMESPACE = "k8s.io"


def runtime_dir(local_dir: Path) -> Path:
    """Where containerd keeps its state and socket: short, under /run, one per checkout.

    A UNIX socket path may not exceed 108 bytes, and a checkout may sit deep.
    """
    key = hashlib.sha256(str(local_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/run/blacklist-node") / key


def containerd_socket(local_dir: Path) -> Path:
    """The CRI socket of the node's containerd."""
    return runtime_dir(local_dir) / "containerd.sock"


def write_configs(
    local_dir: Path, state_dir: Path, pki: Path, ports: dict[str, int], kubeconfigs: dict[str, Path]
) -> dict[str, Path]:
    """Write every configuration file of the node; return their paths by component."""
    (state_dir / "cni").mkdir(parents=True, exist_ok=True)
    (state_dir / "cni" / "10-blacklist.conflist").write_text(json.dumps(cni_config(), indent=2))
    (state_dir / "resolv.conf").write_text("# cluster DNS only; no upstream resolver\n")
    files = {
        "containerd": state_dir / "containerd.toml",
        "kubelet": state_dir / "kubelet.json",
        "kube-proxy": state_dir / "kube-proxy.json",
        "coredns": state_dir / "Corefile",
    }
    hosts = state_dir / "certs.d"
    for host, upstream in ((registry.address(), None), (DOCKER_HUB, DOCKER_HUB)):
        (hosts / host).mkdir(parents=True, exist_ok=True)
        (hosts / host / "hosts.toml").write_text(registry_hosts_toml(registry.address(), upstream))
    files["containerd"].write_text(
        containerd_config(
            local_dir / "containerd", runtime_dir(local_dir), state_dir / "cni", hosts
        )
    )
    files["kubelet"].write_text(
        json.dumps(
            kubelet_config(state_dir, pki, containerd_socket(local_dir), ports["kubelet_healthz"]),
            indent=2,
        )
    )
    files["kube-proxy"].write_text(
        json.dumps(
            kube_proxy_config(
                kubeconfigs["kube-proxy"], ports["proxy_healthz"], ports["proxy_metrics"]
            ),
            indent=2,
        )
    )
    files["coredns"].write_text(
        corefile(kubeconfigs["coredns"], ports["dns_health"], ports["dns_ready"])
    )
    return files


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.2 s; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(0.2)


def cri_answers(socket: Path, crictl_path: str) -> bool:
    """Whether the CRI runtime service on ``socket`` answers a version request."""
    try:
        answer = subprocess.run(
            [crictl_path, "--runtime-endpoint", f"unix://{socket}", "--timeout", "2s", "version"],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False
    return answer.returncode == 0


def ctr(local_dir: Path, ctr_path: str, *arguments: str) -> str:
    """Run ``ctr`` in the CRI namespace of the node's containerd; return its stdout."""
    completed = subprocess.run(
        [ctr_path, "--address", str(containerd_socket(local_dir)),
         "--namespace", CONTAINERD_NAMESPACE, *arguments],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(arguments)} failed: {completed.stderr.strip()}")
    return completed.stdout


def remove_pods(local_dir: Path, crictl_path: str) -> None:
    """Stop and remove every pod sandbox (and so every container) of the node."""
    socket = containerd_socket(local_dir)
    if not socket.exists():
        return
    endpoint = f"unix://{socket}"
    subprocess.run(
        [crictl_path, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
         "--timeout", "60s", "rmp", "--all", "--force"],
        capture_output=True, check=False, timeout=180,
    )  # fmt: skip


def unmount_under(*prefixes: Path) -> None:
    """Unmount everything mounted under ``prefixes``, deepest first (lazily)."""
    roots = tuple(str(prefix.resolve()) + os.sep for prefix in prefixes)
    mounts: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if (point + os.sep).startswith(roots):
            mounts.append(point)
    for point in sorted(set(mounts), key=lambda path: path.count(os.sep), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def remove_pod_cgroups() -> None:
    """Remove the (empty) ``kubepods`` cgroups the kubelet made, in every hierarchy."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / "kubepods"
        if not top.is_dir():
            continue
        directories = sorted(
            (path for path in top.rglob("*") if path.is_dir()),
            key=lambda path: len(path.parts),
            reverse=True,
        )
        for directory in [*directories, top]:
            with contextlib.suppress(OSError):
                directory.rmdir()


def teardown_host(local_dir: Path, state_dir: Path, kube_proxy_path: str | None) -> None:
    """Undo what the node did to the host once its processes are gone."""
    if kube_proxy_path is not None:
        subprocess.run([kube_proxy_path, "--cleanup"], capture_output=True, check=False)
    # The policy engine removes its table when stopped; a killed one leaves it, failing closed.
    subprocess.run(
        ["nft", "-f", "-"],
        input=f"add table inet {POLICY_TABLE}\ndelete table inet {POLICY_TABLE}\n",
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    unmount_under(runtime_dir(local_dir), state_dir, local_dir / "containerd")
    network.remove()
    remove_pod_cgroups()
    network.restore_sysctls(state_dir / "sysctls.json")
    shutil.rmtree(runtime_dir(local_dir), ignore_errors=True)


def start(
    local_dir: Path,
    state_dir: Path,
    pki: Path,
    ports: dict[str, int],
    kubeconfigs: dict[str, Path],
    spawn: Callable[[str, list[str]], None],
    binary: Callable[[str], str],
) -> None:
    """Start containerd, then the kubelet, kube-proxy and CoreDNS (images are pulled).

    ``spawn(name, argv)`` starts and records one process; ``binary(name)``
    finds a toolchain binary.
    """
    files = write_configs(local_dir, state_dir, pki, ports, kubeconfigs)
    runtime_dir(local_dir).mkdir(parents=True, exist_ok=True)
    socket = containerd_socket(local_dir)
    spawn("containerd", [binary("containerd"), "--config", str(files["containerd"])])
    wait_for(socket.exists, 60, f"containerd did not open {socket}")
    # The socket opens before the CRI plugin has recovered its state; a kubelet started
    # then exits ("server is not initialized yet"). Wait until the CRI answers.
    wait_for(lambda: cri_answers(socket, binary("crictl")), 60, "containerd's CRI did not answer")
    spawn(
        "kubelet",
        [
            binary("kubelet"),
            f"--config={files['kubelet']}",
            f"--kubeconfig={kubeconfigs['node']}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_ADDRESS}",
            f"--root-dir={state_dir / 'kubelet'}",
            f"--cert-dir={state_dir / 'kubelet' / 'pki'}",
            "--v=1",
        ],
    )
    spawn("kube-proxy", [binary("kube-proxy"), f"--config={files['kube-proxy']}", "--v=1"])
    spawn("coredns", [binary("coredns"), "-conf", str(files["coredns"])])
    spawn(
        "network-policies",
        network_policy_argv(
            binary("kube-network-policies"), kubeconfigs["network-policies"],
            ports["policy_metrics"],
        ),
    )  # fmt: skip


def container_pids(local_dir: Path, crictl_path: str, namespace: str, container: str) -> list[int]:
    """Host PIDs of the running containers named ``container`` in pods of ``namespace``."""
    endpoint = f"unix://{containerd_socket(local_dir)}"
    listing = subprocess.run(
        [crictl_path, "--runtime-endpoint", endpoint, "ps", "--state", "Running",
         "--name", f"^{container}$", "--label", f"io.kubernetes.pod.namespace={namespace}",
         "--quiet"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    pids = []
    for container_id in listing:
        inspected = subprocess.run(
            [crictl_path, "--runtime-endpoint", endpoint, "inspect", container_id],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        pids.append(int(json.loads(inspected)["info"]["pid"]))
    return pids
