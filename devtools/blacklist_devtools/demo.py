"""``make demo``: the whole product running locally, from ``helm install`` to HTTP.

``python -m blacklist_devtools.demo up`` starts the local cluster (control
plane and a real node) and an SMTP server on the node's address that stores
every mail in ``.local/demo/mailbox``; publishes this tree to the test bed's
registry as the development release ``APPVERSION-dev`` (``make release``'s
path: images labelled and pushed by digest, the chart pushed as an OCI
artifact, no SBOM) and installs the operator from there, ``helm install
oci://localhost:5050/charts/blacklist-operator``, as users install a release;
applies ``examples/blacklistservice.yaml`` (2 replicas) with its mail settings
pointed at that SMTP server and its database image set to the locally built
PostgreSQL image; waits until the ``BlacklistService`` is ``Ready``; writes
``.local/demo.json``; and prints commands to try. ``down``
stops all of it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any

from blacklist_contract.tables import LEDGER_TABLE
from blacklist_devtools import cluster, images, processes, registry, release, stack
from blacklist_devtools.kube import Cluster
from blacklist_devtools.net import free_port, port_is_open, wait_for_port
from blacklist_devtools.network import CLIENT_ADDRESSES, CLIENT_NETNS, NODE_ADDRESS
from blacklist_devtools.processes import ProcessRecord
from blacklist_devtools.release_metadata import ReleaseError
from blacklist_operator.builders.naming import banlist_shard_name

DEMO_DIR = cluster.LOCAL_DIR / "demo"
STATE_FILE = DEMO_DIR / "state.json"
DEMO_JSON = cluster.LOCAL_DIR / "demo.json"
MAILBOX = DEMO_DIR / "mailbox"
EXAMPLE = cluster.REPO_ROOT / "examples" / "blacklistservice.yaml"
NAMESPACE = "demo"
OPERATOR_NAMESPACE = "blacklist-system"
RELEASE = "blacklist-operator"
READY_TIMEOUT = 240.0


def log(message: str) -> None:
    """Progress line on stderr."""
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def up() -> None:
    """Bring the demo up (reusing what already runs) and print how to use it."""
    started = time.monotonic()
    state = cluster.up()
    handle = Cluster(cluster.KUBECONFIG, state.server, cluster.binary("kubectl"))
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    MAILBOX.mkdir(parents=True, exist_ok=True)
    records = load_records()
    if not records or not all(record.alive() for record in records.values()):
        for record in records.values():
            processes.stop(record)
        smtp_port = 2525 if not port_is_open(NODE_ADDRESS, 2525) else free_port(NODE_ADDRESS)
        records = {
            # On the node's address, where the pods reach it.
            "smtp": processes.spawn(
                "smtp",
                [
                    sys.executable,
                    "-m",
                    "blacklist_devtools.smtp",
                    "--host",
                    NODE_ADDRESS,
                    "--port",
                    str(smtp_port),
                    "--mailbox",
                    str(MAILBOX),
                ],
                DEMO_DIR / "smtp.log",
            ),
        }
        save_records(records, smtp_port)
        wait_for_port(NODE_ADDRESS, smtp_port, 30)
    smtp_port = int(json.loads(STATE_FILE.read_text())["smtp_port"])
    log(f"SMTP server on {NODE_ADDRESS}:{smtp_port}, mails stored in {MAILBOX}")
    options = release.dev_options(registry.address())
    log(f"publishing this tree to {registry.address()} as release {options.version}")
    try:
        published = release.release(options)
    except ReleaseError as error:
        raise SystemExit(f"publishing {options.version} failed: {error}") from error
    log(f"installing {published.chart} with Helm into namespace {OPERATOR_NAMESPACE}")
    stack.install_published(
        handle, cluster.binary("helm"), RELEASE, OPERATOR_NAMESPACE, published,
        # For a resource that names no database image: the local PostgreSQL image.
        "--set", f"defaults.databaseImage={images.reference('postgres')}",
    )  # fmt: skip
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input_text=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        ),
    )
    resource = stack.example_resource(NAMESPACE, NODE_ADDRESS, smtp_port)
    name = resource["metadata"]["name"]
    log(f"applying {EXAMPLE.relative_to(cluster.REPO_ROOT)} as {NAMESPACE}/{name}")
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(resource))
    log(f"waiting until {NAMESPACE}/{name} is Ready (the kubelet starts its pods)")
    ready = stack.wait_ready(handle, NAMESPACE, name, READY_TIMEOUT)
    found = stack.instance(handle, NAMESPACE, name)
    services = list(found.service_urls)
    node_url = f"http://{NODE_ADDRESS}:{ready['status']['nodePort']}"
    summary = {
        "kubeconfig": str(cluster.KUBECONFIG),
        "namespace": NAMESPACE,
        "name": name,
        "service_urls": services,
        "node_url": node_url,
        "client_netns": CLIENT_NETNS,
        "client_addresses": list(CLIENT_ADDRESSES),
        "database_url": found.database_url,
        "mailbox": str(MAILBOX),
        "release": published.chart,
        "images": {**published.images, "postgres": images.reference("postgres")},
    }
    DEMO_JSON.write_text(json.dumps(summary, indent=2) + "\n")
    log(f"ready in {time.monotonic() - started:.1f} s; wrote {DEMO_JSON}")
    print(instructions(summary))


def instructions(summary: dict[str, Any]) -> str:
    """What to try once the demo is up."""
    services = summary["service_urls"]
    name, namespace = summary["name"], summary["namespace"]
    client = f"ip netns exec {summary['client_netns']} curl"
    banned, bystander = summary["client_addresses"][0], summary["client_addresses"][1]
    kubectl = f".local/bin/kubectl --kubeconfig {summary['kubeconfig']}"
    replicas = "\n".join(f"    {url}" for url in services)
    return f"""
BlacklistService {namespace}/{name} is Ready with {len(services)} replicas:
{replicas}
  NodePort: {summary["node_url"]}

Try it (clients with their own addresses live in network namespace {summary["client_netns"]}):
  curl '{summary["node_url"]}/?n=88'                            # 7744.0
  # 444: a ledger row, a mail, a ban; then 403 on the other replica too
  {client} -i --interface {banned} {services[0]}/blacklisted
  {client} -i --interface {banned} '{services[-1]}/?n=2'
  # 4.0: other addresses still pass
  {client} -i --interface {bystander} '{summary["node_url"]}/?n=2'
  {kubectl} -n {namespace} port-forward svc/{name} 5004 &  curl 'http://127.0.0.1:5004/?n=88'
  {kubectl} get bls -n {namespace}
  {kubectl} -n {namespace} logs deploy/{name}
  {kubectl} get configmap {banlist_shard_name(name, 0)} -n {namespace} -o yaml
  psql '{summary["database_url"]}' -c 'table {LEDGER_TABLE}'
  ls {summary["mailbox"]}

Stop everything with: make demo-down
"""


def load_records() -> dict[str, ProcessRecord]:
    """The demo's own processes (the SMTP server), if any."""
    if not STATE_FILE.exists():
        return {}
    raw = json.loads(STATE_FILE.read_text())
    return {name: ProcessRecord(**record) for name, record in raw["processes"].items()}


def save_records(records: dict[str, ProcessRecord], smtp_port: int) -> None:
    """Persist the demo's processes."""
    STATE_FILE.write_text(
        json.dumps(
            {"smtp_port": smtp_port, "processes": {n: asdict(r) for n, r in records.items()}}
        )
    )


def down() -> None:
    """Stop the SMTP server, the cluster (and so every pod) and the registry."""
    for name in ("smtp",):
        record = load_records().get(name)
        if record is not None:
            processes.stop(record, grace=30)
    STATE_FILE.unlink(missing_ok=True)
    DEMO_JSON.unlink(missing_ok=True)
    cluster.down()
    registry.down()
    log("demo stopped")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``up`` or ``down``."""
    parser = argparse.ArgumentParser(description="The local demo of blacklist-operator.")
    parser.add_argument("command", choices=["up", "down"])
    arguments = parser.parse_args(argv)
    if arguments.command == "up":
        up()
    else:
        down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
