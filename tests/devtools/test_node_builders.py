"""Unit tests of the local node's pure builders: what each component is told, and why it matters.

These are the settings this machine needs (cgroup v1, no negative
oom_score_adj, images pulled only from the test bed's registry, nothing
leaving the machine) and the firewall clean-up that must leave everyone
else's rules alone.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from blacklist_devtools import controlplane, network, nodeconfig, registry

PKI = Path("/pki")


def test_kubelet_runs_on_cgroup_v1_without_systemd_or_negative_oom_scores() -> None:
    config = nodeconfig.kubelet_config(Path("/state"), PKI, Path("/run/c.sock"), 10248)
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["oomScoreAdj"] == 0
    assert config["address"] == network.NODE_ADDRESS
    assert config["clusterDNS"] == [network.CLUSTER_DNS]
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    # Images pulled once stay: the kubelet never collects them (a test bed's disk is shared).
    assert config["imageGCHighThresholdPercent"] == 100


def test_containerd_uses_runc_cgroupfs_the_local_pause_image_and_no_negative_oom_scores() -> None:
    text = nodeconfig.containerd_config(Path("/store"), Path("/run/node"), Path("/state/cni"))
    config = tomllib.loads(text)
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"BinaryName": nodeconfig.RUNC, "SystemdCgroup": False}
    assert runtime["cni"]["conf_dir"] == "/state/cni"
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == nodeconfig.PAUSE_IMAGE
    assert config["grpc"]["address"] == "/run/node/containerd.sock"
    assert config["root"] == "/store"


def test_containerd_pulls_from_the_test_bed_registry_over_plain_http_on_loopback() -> None:
    text = nodeconfig.containerd_config(
        Path("/store"), Path("/run/node"), Path("/state/cni"), Path("/state/certs.d")
    )
    images = tomllib.loads(text)["plugins"]["io.containerd.cri.v1.images"]
    assert images["registry"]["config_path"] == "/state/certs.d"
    hosts = tomllib.loads(nodeconfig.registry_hosts_toml("localhost:5050"))
    assert hosts["server"] == "http://localhost:5050"
    assert hosts["host"]["http://localhost:5050"]["capabilities"] == ["pull", "resolve"]
    # A mirror of docker.io: short names (the chart's defaults) are pulled from it too.
    mirror = tomllib.loads(nodeconfig.registry_hosts_toml("localhost:5050", "docker.io"))
    assert mirror["server"] == "https://docker.io"
    assert list(mirror["host"]) == ["http://localhost:5050"]
    # The sandbox image is pulled from there too: nothing reaches the node another way.
    assert nodeconfig.PAUSE_IMAGE.startswith(f"{registry.address()}/")


def test_the_registry_listens_on_loopback_with_a_store_that_outlives_it() -> None:
    config = json.loads(registry.config(Path("/cache/registry"), 5050))
    assert config["http"]["addr"] == "127.0.0.1:5050"
    assert config["storage"]["filesystem"]["rootdirectory"] == "/cache/registry"


def test_pods_are_never_masqueraded_off_the_machine() -> None:
    bridge = nodeconfig.cni_config()["plugins"][0]
    assert bridge["type"] == "bridge"
    assert bridge["ipMasq"] is False
    assert bridge["hairpinMode"] is True
    assert bridge["ipam"]["ranges"] == [[{"subnet": network.NODE_POD_SUBNET}]]


def test_kube_proxy_serves_node_ports_on_the_node_address_only() -> None:
    config = nodeconfig.kube_proxy_config(Path("/k"), 1, 2)
    assert config["mode"] == "iptables"
    assert config["nodePortAddresses"] == [f"{network.NODE_ADDRESS}/32"]
    assert config["iptables"]["localhostNodePorts"] is False
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["oomScoreAdj"] == 0


def test_cluster_dns_answers_cluster_local_and_forwards_nothing() -> None:
    corefile = nodeconfig.corefile(Path("/k"), 1, 2)
    assert "kubernetes cluster.local" in corefile
    assert "forward" not in corefile
    service, endpoints, *_ = nodeconfig.dns_manifests()
    assert service["spec"]["clusterIP"] == network.CLUSTER_DNS
    assert endpoints["endpoints"][0]["addresses"] == [network.NODE_ADDRESS]


def test_kwok_manages_the_simulated_node_only() -> None:
    argv = controlplane.kwok_argv("kwok", Path("/k"), Path("/s"), {"kwok": 1})
    assert "--manage-all-nodes=false" in argv
    assert "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake" in argv
    assert "--node-lease-duration-seconds=40" in argv
    node = controlplane.simulated_node_manifest()
    assert node["spec"]["taints"] == [controlplane.SIMULATED_NODE_TAINT]


def test_the_api_server_listens_on_the_node_address_with_a_node() -> None:
    ports = {"etcd": 1, "apiserver": 2}
    with_node = controlplane.apiserver_argv("a", network.NODE_ADDRESS, PKI, PKI, ports, True)
    assert f"--bind-address={network.NODE_ADDRESS}" in with_node
    assert "--endpoint-reconciler-type=none" not in with_node
    alone = controlplane.apiserver_argv("a", "127.0.0.1", PKI, PKI, ports, False)
    assert "--endpoint-reconciler-type=none" in alone


def test_client_addresses_cover_a_large_range_and_are_recognised() -> None:
    assert network.client_address(0) == "10.251.0.1"
    assert network.client_address(999) == "10.251.3.238"
    assert len({network.client_address(index) for index in range(5000)}) == 5000
    assert network.is_client_address(network.client_address(4321))
    assert network.is_client_address(network.CLIENT_ADDRESSES[0])
    assert not network.is_client_address("127.0.0.5")
    with pytest.raises(ValueError, match="no client address"):
        network.client_address(254 * 256)


DUMP = """# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:BLK-ISOLATE - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j BLK-ISOLATE
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -j DOCKER-USER
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A BLK-ISOLATE -o blk+ -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"""


def test_firewall_clean_up_removes_our_chains_and_keeps_everyone_elses() -> None:
    kept = network.without_chains(DUMP, ("KUBE-", "CNI-", "BLK-"))
    assert "KUBE-" not in kept
    assert "BLK-" not in kept
    assert ":DOCKER-USER - [0:0]" in kept
    assert "-A FORWARD -j DOCKER-USER" in kept
    assert "-A DOCKER-USER -j RETURN" in kept
    assert kept.splitlines()[-1] == "COMMIT"
