"""The control plane's command lines and the cluster-wide objects it starts with: pure builders.

``cluster.py`` starts the processes and records them; this module only says
how each one is run (each flag with the reason it is there), so that a reader
sees every setting of the local control plane in one place.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from blacklist_devtools.network import SERVICE_CIDR, SIMULATED_POD_CIDR
from blacklist_devtools.provisioner import PROVISIONER, STORAGE_CLASS

SIMULATED_NODE_NAME = "kwok-node-0"
# The taint that keeps every pod off the simulated node unless it tolerates it.
SIMULATED_NODE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}


def etcd_argv(binary: str, data_dir: Path, ports: dict[str, int]) -> list[str]:
    """Etcd on loopback."""
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
    return [
        binary,
        "--name=node0",
        f"--data-dir={data_dir}",
        # A throwaway development cluster: speed over crash durability.
        "--unsafe-no-fsync=true",
        f"--listen-client-urls={etcd_url}",
        f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=node0={peer_url}",
        "--listen-metrics-urls=",
        "--log-level=warn",
    ]


def apiserver_argv(
    binary: str, address: str, tokens: Path, pki: Path, ports: dict[str, int], with_node: bool
) -> list[str]:
    """kube-apiserver on ``address`` (the node's address, or loopback without a node)."""
    return [
        binary,
        f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
        f"--bind-address={address}",
        f"--advertise-address={address}",
        f"--secure-port={ports['apiserver']}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--token-auth-file={tokens}",
        "--authorization-mode=Node,RBAC",
        # NodeRestriction as on any real cluster; the two namespace-annotation plugins
        # let the scale benchmark send whole namespaces to the simulated node.
        "--enable-admission-plugins=NodeRestriction,PodNodeSelector,PodTolerationRestriction",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        # A loopback advertise address is only valid without the endpoint reconciler.
        *([] if with_node else ["--endpoint-reconciler-type=none"]),
        "--allow-privileged=true",
    ]


def _controller_flags(kubeconfig: Path, port: int) -> list[str]:
    """What the controller manager and the scheduler share: identity, loopback, one instance."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        # One instance of each: no lease to wait for after a restart.
        "--leader-elect=false",
    ]


def controller_manager_argv(
    binary: str, kubeconfig: Path, pki: Path, ports: dict[str, int]
) -> list[str]:
    """kube-controller-manager with the admin's kubeconfig."""
    return [
        binary,
        *_controller_flags(kubeconfig, ports["controller_manager"]),
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        # Benchmarks create hundreds of objects; client throttling would measure itself.
        "--kube-api-qps=500",
        "--kube-api-burst=1000",
        "--concurrent-deployment-syncs=20",
        "--concurrent-replicaset-syncs=20",
    ]


def scheduler_argv(binary: str, kubeconfig: Path, ports: dict[str, int]) -> list[str]:
    """kube-scheduler with the admin's kubeconfig."""
    return [binary, *_controller_flags(kubeconfig, ports["scheduler"])]


def kwok_argv(binary: str, kubeconfig: Path, stages: Path, ports: dict[str, int]) -> list[str]:
    """kwok, managing the simulated node only."""
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        # Only the simulated node: the real node belongs to its kubelet.
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        # Renew the node's Lease, as a kubelet does: without it the node's health rests on
        # status updates kwok makes about once a minute, the node controller marks the
        # node NotReady between two, and every pod on it loses Ready for good.
        "--node-lease-duration-seconds=40",
        f"--config={stages}",
        f"--cidr={SIMULATED_POD_CIDR}",
        "--node-ip=127.0.0.1",
        f"--server-address=127.0.0.1:{ports['kwok']}",
    ]


def provisioner_argv(kubeconfig: Path, volumes_dir: Path) -> list[str]:
    """The hostPath provisioner behind the default StorageClass."""
    return [
        sys.executable, "-m", "blacklist_devtools.provisioner",
        "--kubeconfig", str(kubeconfig), "--volumes-dir", str(volumes_dir),
    ]  # fmt: skip


def simulated_node_manifest() -> dict[str, Any]:
    """The simulated Node that kwok manages, for scale benchmarks only.

    Tainted, so that only pods that tolerate it land there; big enough for
    hundreds of pods that the real node could never run.
    """
    capacity = {"cpu": "1000", "memory": "4Ti", "pods": "2000", "ephemeral-storage": "10Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": SIMULATED_NODE_NAME,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": SIMULATED_NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "spec": {
            "podCIDR": SIMULATED_POD_CIDR,
            "podCIDRs": [SIMULATED_POD_CIDR],
            "taints": [SIMULATED_NODE_TAINT],
        },
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
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }
