"""The local node's configuration: pure builders of every file and command line it runs with.

containerd's ``config.toml``, the CNI network, the KubeletConfiguration, the
KubeProxyConfiguration, CoreDNS's Corefile and its ``kube-dns`` Service, and
the NetworkPolicy engine's command line and RBAC. ``node.py`` writes them and
starts the processes; the settings this machine needs are explained where
they are set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blacklist_devtools import registry
from blacklist_devtools.network import (
    CLUSTER_DNS,
    CNI_BRIDGE,
    NODE_ADDRESS,
    NODE_POD_SUBNET,
    POD_CIDR,
)

NODE_NAME = "blacklist-node"
KUBELET_PORT = 10250
# The image containerd starts for each pod's sandbox; built by `make images`, pulled from the
# test bed's registry like every other image.
PAUSE_IMAGE = f"{registry.address()}/pause:3.10"
RUNC = "/usr/sbin/runc"
CNI_PLUGINS = "/usr/lib/cni"
# The nftables table the NetworkPolicy engine owns.
POLICY_TABLE = "kube-network-policies"


def containerd_config(
    image_store: Path, run_dir: Path, cni_dir: Path, registry_hosts: Path | None = None
) -> str:
    """The config.toml of the node's containerd (version 3, containerd 2.x).

    ``image_store`` is its root (content and snapshots), ``run_dir`` its state and
    sockets, ``cni_dir`` where the CNI configuration is, ``registry_hosts`` the
    directory of per-registry ``hosts.toml`` files (:func:`registry_hosts_toml`).
    """
    cri = "plugins.'io.containerd.cri.v1.runtime'"
    images = "plugins.'io.containerd.cri.v1.images'"
    lines = [
        "version = 3",
        # The image store outlives the cluster so that images are imported once.
        f"root = {json.dumps(str(image_store))}",
        f"state = {json.dumps(str(run_dir / 'state'))}",
        "[grpc]",
        f"  address = {json.dumps(str(run_dir / 'containerd.sock'))}",
        "[ttrpc]",
        f"  address = {json.dumps(str(run_dir / 'containerd.sock.ttrpc'))}",
        f"[{cri}]",
        "  enable_selinux = false",
        # This machine refuses negative oom_score_adj values; containerd must not ask for them.
        "  restrict_oom_score_adj = true",
        f"[{cri}.containerd]",
        "  default_runtime_name = 'runc'",
        f"[{cri}.containerd.runtimes.runc]",
        "  runtime_type = 'io.containerd.runc.v2'",
        f"[{cri}.containerd.runtimes.runc.options]",
        f"  BinaryName = {json.dumps(RUNC)}",
        # No systemd here: cgroups are managed through cgroupfs, as the kubelet does.
        "  SystemdCgroup = false",
        f"[{cri}.cni]",
        f"  bin_dirs = [{json.dumps(CNI_PLUGINS)}]",
        f"  conf_dir = {json.dumps(str(cni_dir))}",
        "  max_conf_num = 1",
        f"[{images}]",
        "  snapshotter = 'overlayfs'",
        f"[{images}.pinned_images]",
        f"  sandbox = {json.dumps(PAUSE_IMAGE)}",
        *(
            [f"[{images}.registry]", f"  config_path = {json.dumps(str(registry_hosts))}"]
            if registry_hosts is not None
            else []
        ),
        "[plugins.'io.containerd.grpc.v1.cri']",
        # kubectl exec/attach/port-forward streams, proxied by the kubelet.
        "  stream_server_address = '127.0.0.1'",
        "  stream_server_port = '0'",
    ]
    return "\n".join(lines) + "\n"


# The registry whose images a short name such as ``flask-blacklist-svc:v1`` means.
DOCKER_HUB = "docker.io"


def registry_hosts_toml(address: str, upstream: str | None = None) -> str:
    """``certs.d/HOST/hosts.toml``: containerd pulls from the registry at ``address`` over HTTP.

    Without ``upstream``, for images named ``ADDRESS/...``. With it, the registry
    is a mirror of ``upstream`` (``docker.io``: ``certs.d/docker.io/hosts.toml``),
    tried first, as an air-gapped cluster's nodes are set up; nothing here can
    reach the upstream itself. The test bed's registry listens on loopback only,
    where TLS would protect nothing; a cluster's registry is named the same way,
    with ``https://`` and its CA (``ca = "..."``).
    """
    server = f"https://{upstream}" if upstream is not None else f"http://{address}"
    lines = [
        f'server = "{server}"',
        f'[host."http://{address}"]',
        '  capabilities = ["pull", "resolve"]',
    ]
    return "\n".join(lines) + "\n"


def cni_config() -> dict[str, Any]:
    """The pod network: a bridge with host-local addresses, port mappings, no masquerade.

    ``ipMasq`` stays off: nothing a pod sends is masqueraded off the machine.
    ``hairpinMode`` lets a pod reach itself through its own Service.
    """
    return {
        "cniVersion": "1.0.0",
        "name": "blacklist-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": CNI_BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": NODE_POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(state_dir: Path, pki: Path, socket: Path, healthz_port: int) -> dict[str, Any]:
    """The KubeletConfiguration of the node."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_ADDRESS,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "containerRuntimeEndpoint": f"unix://{socket}",
        # This machine mounts cgroup v1 hierarchies (with cgroup2 beside them) and
        # has no systemd: kubelet >= 1.35 refuses v1 unless told otherwise.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        # Negative oom_score_adj values are refused here.
        "oomScoreAdj": 0,
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": "cluster.local",
        # No upstream resolver: cluster DNS answers for cluster.local only.
        "resolvConf": str(state_dir / "resolv.conf"),
        "registerNode": True,
        "maxPods": 110,
        "serializeImagePulls": False,
        # The images are imported, not pulled: never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        # ConfigMap and Secret volumes follow their objects within seconds.
        "syncFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "shutdownGracePeriod": "0s",
        "containerLogMaxSize": "10Mi",
    }


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    """The KubeProxyConfiguration of the node (iptables mode)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "bindAddress": NODE_ADDRESS,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "oomScoreAdj": 0,
        # NodePorts on the node's address only: no route_localnet, no localhost NodePorts.
        "nodePortAddresses": [f"{NODE_ADDRESS}/32"],
        # Batch rule updates (upstream default): hundreds of churning Services would
        # otherwise rewrite the tables back to back and starve a 2-core node.
        "iptables": {"localhostNodePorts": False, "minSyncPeriod": "1s", "syncPeriod": "30s"},
        # Leave the host's conntrack table size and timeouts as they are.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def corefile(kubeconfig: Path, health_port: int, ready_port: int) -> str:
    """CoreDNS's configuration: cluster.local from the API, nothing forwarded upstream."""
    return "\n".join(
        [
            ".:53 {",
            f"    bind {NODE_ADDRESS}",
            "    errors",
            f"    health {NODE_ADDRESS}:{health_port}",
            f"    ready {NODE_ADDRESS}:{ready_port}",
            "    kubernetes cluster.local in-addr.arpa ip6.arpa {",
            f"        kubeconfig {kubeconfig}",
            "        pods insecure",
            "        fallthrough in-addr.arpa ip6.arpa",
            "    }",
            "    cache 5",
            "}",
            "",
        ]
    )


def dns_manifests() -> list[dict[str, Any]]:
    """The ``kube-dns`` Service and its endpoints (CoreDNS listens on the node's address)."""
    labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
    ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "clusterIP": CLUSTER_DNS,
                "ports": [
                    {"name": name, "port": 53, "protocol": protocol, "targetPort": 53}
                    for name, protocol in ports
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-node",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "local.blacklist.dev",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [NODE_ADDRESS], "conditions": {"ready": True}}],
            "ports": [{"name": name, "port": 53, "protocol": protocol} for name, protocol in ports],
        },
        *reader_role(
            "system:coredns",
            {
                "": ["endpoints", "services", "pods", "namespaces"],
                "discovery.k8s.io": ["endpointslices"],
            },
        ),
    ]


def reader_role(user: str, resources: dict[str, list[str]]) -> list[dict[str, Any]]:
    """A ClusterRole ``user`` that lists and watches ``resources`` by API group, bound to it."""
    rbac = "rbac.authorization.k8s.io"
    return [
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": user},
            "rules": [
                {"apiGroups": [group], "resources": kinds, "verbs": ["list", "watch"]}
                for group, kinds in resources.items()
            ],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": user},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": user},
            "subjects": [{"apiGroup": rbac, "kind": "User", "name": user}],
        },
    ]


def network_policy_argv(binary_path: str, kubeconfig: Path, metrics_port: int) -> list[str]:
    """The command line of the node's NetworkPolicy engine (kube-network-policies).

    It runs on the host like kube-proxy: as root, in the host's network namespace,
    where it owns the nftables table ``inet kube-network-policies``. The first packet
    of each new connection to or from a local pod that a NetworkPolicy selects goes
    to user space through NFQUEUE 100, where the engine accepts or drops it;
    established traffic passes. Never filtered: sockets of uid 0 on the host
    (upstream exempts them so that kubelet probes always pass) and traffic from pods
    to the node's own addresses (it never crosses the postrouting hook).

    On SIGTERM or SIGINT it deletes its table and exits 5 s later; a killed engine
    leaves the table behind. Without ``--fail-open`` (not given) the queue has no
    bypass: while the table stands and no engine reads the queue, new connections of
    the selected pods are dropped.
    """
    return [
        binary_path,
        # A flag the toolchain's build adds (upstream v0.8.0 knows only the in-cluster config).
        f"--kubeconfig={kubeconfig}",
        # The Node whose pods it guards: pods whose spec.nodeName differs are ignored.
        f"--hostname-override={NODE_NAME}",
        # Prometheus /metrics, its only HTTP endpoint; upstream binds :9080 on every address.
        f"--metrics-bind-address=127.0.0.1:{metrics_port}",
        # The default, spelled out: /proc/net/netfilter/nfnetlink_queue lists the queue by it.
        "--nfqueue-id=100",
        # The conntrack race it works around (DNS judged in prerouting) is fixed in kernels
        # >= 6.12: DNS is judged in postrouting like any other traffic, no prerouting chain.
        "--netfilter-bug-1766-fix=false",
        "--v=1",
    ]


def network_policy_rbac() -> list[dict[str, Any]]:
    """The NetworkPolicy engine's ClusterRole, bound to the ``system:network-policies`` user.

    It only lists and watches what its informers cache: pods, namespaces and
    NetworkPolicies. It writes nothing (its event recorder never records) and reads
    nodes only with the AdminNetworkPolicy flags, which stay off.
    """
    return reader_role(
        "system:network-policies",
        {"": ["pods", "namespaces"], "networking.k8s.io": ["networkpolicies"]},
    )
