"""The local node's network, all on this machine: bridges, routes, client namespace, firewall.

The node's address lives on a bridge the cluster creates (``blk0``, no other
port than the clients' veth), so that the kubelet, the API server and
NodePorts have a real, non-loopback address. Pods live on a second bridge
made by the CNI bridge plugin (``blk-cni0``). External clients are real: a
network namespace holds several client addresses on a veth plugged into the
node's bridge (and a whole range it can bind, for load tests), so a request
to a NodePort or a pod arrives with its own source address. Nothing is
routed or masqueraded off the machine: the Service range is routed onto the
node's bridge (so an unserved ClusterIP dies there instead of following the
default route), and a filter chain drops anything from the pod or client
ranges that would leave through another interface.

Every host setting the node's components change (sysctls) is recorded before
they start and restored by :func:`restore_sysctls` on the way down.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import itertools
import json
import socket
import subprocess
from pathlib import Path

NODE_BRIDGE = "blk0"
NODE_ADDRESS = "10.250.0.1"
NODE_NETWORK = "10.250.0.0/24"
CNI_BRIDGE = "blk-cni0"
POD_CIDR = "10.244.0.0/16"
NODE_POD_SUBNET = "10.244.0.0/24"
SIMULATED_POD_CIDR = "10.245.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_DNS = "10.96.0.10"
CLIENT_NETNS = "blacklist-clients"
CLIENT_VETH = "blk-clients"
CLIENT_ADDRESSES = tuple(f"10.250.0.{host}" for host in range(10, 18))
# Many more client addresses for load tests: the whole range is local in the
# client namespace (any address in it can be bound) and routed there from the host.
CLIENT_RANGE = "10.251.0.0/16"
ISOLATION_CHAIN = "BLK-ISOLATE"
CLONE_NEWNET = 0x40000000

# What the kubelet, kube-proxy and the CNI bridge set at start; restored on the way down.
SYSCTLS = (
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a networking command; raise with its stderr when ``check`` and it fails."""
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and completed.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {completed.stderr.strip()}")
    return completed


def record_sysctls(path: Path) -> None:
    """Save the current value of every sysctl the node's components change (once)."""
    if path.exists():
        return
    values: dict[str, str] = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = (Path("/proc/sys") / name).read_text().strip()
    path.write_text(json.dumps(values, indent=2))


def restore_sysctls(path: Path) -> None:
    """Write back the values :func:`record_sysctls` saved, then forget them."""
    if not path.exists():
        return
    for name, value in json.loads(path.read_text()).items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / name).write_text(value)
    path.unlink()


def set_sysctl(name: str, value: str) -> None:
    """Set one sysctl by its /proc/sys path."""
    (Path("/proc/sys") / name).write_text(value)


def link_exists(name: str) -> bool:
    """Tell whether a network interface exists."""
    return run("ip", "link", "show", name, check=False).returncode == 0


def netns_exists(name: str) -> bool:
    """Tell whether a named network namespace exists."""
    return name in run("ip", "netns", "list").stdout.split()


def create() -> None:
    """Create the node bridge, the client namespace and the isolation rules (idempotent)."""
    if not Path("/proc/sys/net/bridge").is_dir():
        raise SystemExit("the kernel's br_netfilter is not loaded: run `modprobe br_netfilter`")
    if not link_exists(NODE_BRIDGE):
        run("ip", "link", "add", NODE_BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{NODE_ADDRESS}/24", "dev", NODE_BRIDGE)
    run("ip", "link", "set", NODE_BRIDGE, "up")
    run("ip", "route", "replace", SERVICE_CIDR, "dev", NODE_BRIDGE)
    # Pod addresses not (yet) on the CNI bridge, and the simulated nodes' pods,
    # must never follow the default route.
    run("ip", "route", "replace", "blackhole", POD_CIDR)
    run("ip", "route", "replace", "blackhole", SIMULATED_POD_CIDR)
    set_sysctl("net/bridge/bridge-nf-call-iptables", "1")
    set_sysctl("net/ipv4/ip_forward", "1")
    if not netns_exists(CLIENT_NETNS):
        run("ip", "netns", "add", CLIENT_NETNS)
    if not link_exists(CLIENT_VETH):
        run("ip", "link", "add", CLIENT_VETH, "type", "veth", "peer", "name", "eth0",
            "netns", CLIENT_NETNS)  # fmt: skip
    run("ip", "link", "set", CLIENT_VETH, "master", NODE_BRIDGE, "up")
    present = run("ip", "-n", CLIENT_NETNS, "-o", "addr", "show", "dev", "eth0").stdout
    for address in CLIENT_ADDRESSES:
        if f" {address}/" not in present:
            run("ip", "-n", CLIENT_NETNS, "addr", "add", f"{address}/24", "dev", "eth0")
    run("ip", "-n", CLIENT_NETNS, "link", "set", "lo", "up")
    run("ip", "-n", CLIENT_NETNS, "link", "set", "eth0", "up")
    run("ip", "-n", CLIENT_NETNS, "route", "replace", "default", "via", NODE_ADDRESS)
    run("ip", "-n", CLIENT_NETNS, "route", "replace", "local", CLIENT_RANGE, "dev", "lo")
    run("ip", "route", "replace", CLIENT_RANGE, "via", CLIENT_ADDRESSES[0], "dev", NODE_BRIDGE)
    _isolate()


def _isolate() -> None:
    """Drop forwarded traffic from the pod and client ranges that would leave the machine."""
    if run("iptables", "-w", "-n", "-L", ISOLATION_CHAIN, check=False).returncode == 0:
        return
    run("iptables", "-w", "-N", ISOLATION_CHAIN)
    run("iptables", "-w", "-A", ISOLATION_CHAIN, "-o", "blk+", "-j", "RETURN")
    for source in (POD_CIDR, SIMULATED_POD_CIDR, NODE_NETWORK, CLIENT_RANGE):
        run("iptables", "-w", "-A", ISOLATION_CHAIN, "-s", source, "-j", "DROP")
    run("iptables", "-w", "-I", "FORWARD", "1", "-j", ISOLATION_CHAIN)


def without_chains(dump: str, prefixes: tuple[str, ...]) -> str:
    """An ``iptables-save`` dump of one table without the chains named ``prefixes*``.

    Their declarations, their rules and every rule elsewhere that jumps to them go;
    everything else stays as it was.
    """
    kept: list[str] = []
    for line in dump.splitlines():
        words = line.split()
        declared = line.startswith(":") and line[1:].startswith(prefixes)
        in_chain = line.startswith("-A") and len(words) > 1 and words[1].startswith(prefixes)
        jumps = line.startswith("-A") and any(
            word in ("-j", "-g") and target.startswith(prefixes)
            for word, target in itertools.pairwise(words)
        )
        if not (declared or in_chain or jumps):
            kept.append(line)
    return "\n".join(kept) + "\n"


def remove_iptables_rules(prefixes: tuple[str, ...]) -> None:
    """Remove every chain whose name starts with one of ``prefixes``, and the jumps to it.

    Each table is rewritten whole with ``iptables-restore`` from its own dump
    minus those chains and rules, so rules of anyone else stay as they were.
    """
    for table in ("filter", "nat", "mangle", "raw"):
        dump = run("iptables-save", "-t", table, check=False).stdout
        if not dump:
            continue
        kept = without_chains(dump, prefixes)
        if kept != dump:
            subprocess.run(
                ["iptables-restore", "-w", "-T", table],
                input=kept, capture_output=True, text=True, check=True,
            )  # fmt: skip


def remove() -> None:
    """Undo :func:`create` and what the CNI plugins left: bridges, namespace, rules."""
    if netns_exists(CLIENT_NETNS):
        run("ip", "netns", "delete", CLIENT_NETNS, check=False)
    for link in (CLIENT_VETH, CNI_BRIDGE, NODE_BRIDGE):
        if link_exists(link):
            run("ip", "link", "delete", link, check=False)
    for cidr in (POD_CIDR, SIMULATED_POD_CIDR):
        run("ip", "route", "delete", "blackhole", cidr, check=False)
    remove_iptables_rules(("KUBE-", "CNI-", "BLK-"))


def client_address(index: int) -> str:
    """The ``index``-th address of the client range (0 … 65,023), for many distinct clients."""
    if not 0 <= index < 254 * 256:
        raise ValueError(f"no client address number {index}")
    # Host parts 1 to 254 of each /24 of the range: none ends in .0 or .255.
    first = ipaddress.ip_network(CLIENT_RANGE).network_address
    return str(first + 256 * (index // 254) + index % 254 + 1)


def is_client_address(address: str) -> bool:
    """Tell whether ``address`` belongs to the client namespace."""
    parsed = ipaddress.ip_address(address)
    return parsed in ipaddress.ip_network(CLIENT_RANGE) or address in CLIENT_ADDRESSES


def socket_in_client_namespace(family: int, kind: int) -> socket.socket:
    """A new socket that lives in the client namespace, made from any thread.

    A thread may switch its own network namespace; the socket it creates there
    stays in that namespace, so the thread switches back at once.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    with (
        open(f"/var/run/netns/{CLIENT_NETNS}", "rb") as target,
        open("/proc/thread-self/ns/net", "rb") as original,
    ):
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"cannot enter network namespace {CLIENT_NETNS}")
        try:
            return socket.socket(family, kind)
        finally:
            if libc.setns(original.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot return to the original namespace")
