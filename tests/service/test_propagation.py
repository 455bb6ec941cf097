"""Two replicas and the real control plane: a ban made on one holds on the other within 2 s.

The test plays the operator: it writes the ban list as the operator does
(:mod:`blacklist_contract.wire`: the head ``bls-banlist`` with text lines, and
snapshot parts ``bls-banlist-1`` … with packed binary sections) and the
replicas' ServiceAccount with the Role the service needs (docs/CONTRACTS.md,
"What a replica reads": get on the head and the 63 part names, list and watch
on the head), then copies each ledger row's address into the head as soon as
it lands. The replicas watch the head with the account's token.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from kubernetes import client

from blacklist_contract.lines import format_lines
from blacklist_contract.prefixes import Prefix, parse_prefix
from blacklist_contract.wire import (
    INSTANCE_LABEL,
    LIFTS_SEEN_ANNOTATION,
    MANAGED_BY_LABEL,
    MAX_PARTS,
    OPERATOR_NAME,
    SNAPSHOT_ANNOTATION,
    Section,
    encode_part,
    part_name,
)
from blacklist_devtools.http import get
from blacklist_devtools.kube import Cluster, wait_until
from blacklist_devtools.postgres import PostgresServer
from blacklist_service.delivery import ledger
from blacklist_service.delivery.outbox import Hit
from tests.service.conftest import ledger_addresses
from tests.service.processes import ServiceFactory, ServiceProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]

NAME = "bls"
BANLIST = f"{NAME}-banlist"
PARTS = [part_name(NAME, index) for index in range(1, MAX_PARTS)]


def rbac(namespace: str) -> str:
    """ServiceAccount, Role (read the ban list, nothing else) and RoleBinding, as JSON list."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME}},
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": NAME},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "resources": ["configmaps"],
                            "resourceNames": [BANLIST],
                            "verbs": ["get", "list", "watch"],
                        },
                        {
                            "apiGroups": [""],
                            "resources": ["configmaps"],
                            "resourceNames": PARTS,
                            "verbs": ["get"],
                        },
                    ],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": NAME},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": NAME,
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
                },
            ],
        }
    )


def service_account_dir(cluster: Cluster, namespace: str, directory: Path) -> Path:
    """A directory laid out like a pod's ServiceAccount mount, with a TokenRequest token."""
    directory.mkdir()
    token = cluster.kubectl("create", "token", NAME, "-n", namespace, "--duration=1h").strip()
    (directory / "token").write_text(token)
    kubeconfig = json.loads(cluster.kubeconfig.read_text())
    authority = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
    (directory / "ca.crt").write_bytes(base64.b64decode(authority))
    (directory / "namespace").write_text(namespace)
    return directory


def write(core: client.CoreV1Api, namespace: str, name: str, body: dict[str, object]) -> None:
    """Create or replace one ConfigMap of the ban list, as the operator does."""
    metadata = body.get("metadata")
    labels = {MANAGED_BY_LABEL: OPERATOR_NAME, INSTANCE_LABEL: NAME}
    body = {
        **body,
        "metadata": {
            "name": name,
            "labels": labels,
            **(metadata if isinstance(metadata, dict) else {}),
        },
    }
    try:
        core.replace_namespaced_config_map(name, namespace, body)
    except client.ApiException as error:
        if error.status != 404:
            raise
        core.create_namespaced_config_map(namespace, body)


def head(
    bans: list[str], snapshot: str = "0", parts: int = 0, lifts_seen: int = 0
) -> dict[str, object]:
    """The head's body: text lines of ``bans``, the snapshot generation and its parts."""
    listed: list[tuple[Prefix, int]] = []
    for text in bans:
        found = parse_prefix(text)
        assert found is not None
        listed.append((found, 0))
    return {
        "metadata": {"annotations": {LIFTS_SEEN_ANNOTATION: str(lifts_seen)}},
        "data": {
            "addresses": format_lines(listed),
            "snapshot": snapshot,
            "parts": str(parts),
            "count": str(len(bans)),
        },
    }


def part(generation: str, bans: list[str]) -> dict[str, object]:
    """A snapshot part's body: ``bans`` (sorted, one section each) packed as the operator does."""
    sections: dict[tuple[int, int], Section] = {}
    for text in bans:
        found = parse_prefix(text)
        assert found is not None
        ident = (found.version, found.length)
        sections.setdefault(ident, Section.empty(*ident)).append(found, 0)
    encoded = encode_part(sections[ident] for ident in sorted(sections))
    return {
        "metadata": {"annotations": {SNAPSHOT_ANNOTATION: generation, LIFTS_SEEN_ANNOTATION: "0"}},
        "binaryData": {"bans": base64.b64encode(encoded).decode()},
    }


def ready(service: ServiceProcess) -> bool:
    return get(f"{service.url}/readyz").status == 200


def served(service: ServiceProcess, source: str) -> bool:
    return all(get(f"{service.url}/?n=2", source=source).status == 200 for _ in range(4))


def refused_everywhere(service: ServiceProcess, source: str) -> bool:
    # Several fresh connections, so both workers of the replica are asked.
    return all(get(f"{service.url}/?n=2", source=source).status == 403 for _ in range(4))


def test_a_ban_on_one_replica_holds_on_the_other_within_two_seconds(
    cluster: Cluster,
    namespace: str,
    postgres: PostgresServer,
    service_factory: ServiceFactory,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(cluster.api_client())
    # A snapshot of two parts; part 2 is still at the previous generation (the
    # operator is writing it): no replica is ready until it holds the whole list.
    write(core, namespace, part_name(NAME, 1), part("g1", ["127.0.2.10", "127.0.2.11"]))
    write(core, namespace, part_name(NAME, 2), part("g0", ["127.0.2.12"]))
    write(core, namespace, BANLIST, head([], snapshot="g1", parts=2))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=rbac(namespace))
    account = service_account_dir(cluster, namespace, tmp_path / "serviceaccount")
    api = urllib.parse.urlsplit(cluster.server)
    environment = {
        "DATABASE_URL": postgres.url,
        "SERVICE_ACCOUNT_DIR": str(account),
        "KUBERNETES_SERVICE_HOST": str(api.hostname),
        "KUBERNETES_SERVICE_PORT": str(api.port),
        "BANLIST_CONFIGMAP": BANLIST,
        "POD_NAMESPACE": namespace,
    }
    first, second = service_factory(**environment), service_factory(**environment)
    time.sleep(8)  # longer than the replicas look again for a part (5 s)
    for replica in (first, second):
        assert not ready(replica), replica.log()
    write(core, namespace, part_name(NAME, 2), part("g1", ["127.0.2.12", "2001:db8:2::/64"]))
    write(core, namespace, BANLIST, head([], snapshot="g1", parts=2))  # the head changes last
    for replica in (first, second):
        assert wait_until(partial(ready, replica), timeout=30), replica.log()
        for address in ("127.0.2.10", "127.0.2.12"):
            assert refused_everywhere(replica, address)

    banned, bystander = "127.0.2.1", "127.0.2.2"
    hit_at = time.monotonic()
    assert get(f"{first.url}/blacklisted", source=banned).status == 444
    assert wait_until(lambda: banned in ledger_addresses(postgres), timeout=2.0, interval=0.02)
    write(core, namespace, BANLIST, head([banned], snapshot="g1", parts=2))
    assert wait_until(lambda: refused_everywhere(second, banned), timeout=2.0, interval=0.02), (
        second.log()
    )
    elapsed = time.monotonic() - hit_at
    assert elapsed <= 2.0, f"the ban reached the second replica after {elapsed:.2f} s"
    assert get(f"{second.url}/?n=3", source=bystander).body == "9.0"

    # A new snapshot that takes the head's line in and drops 127.0.2.10 (its ledger
    # row deleted): every replica follows it.
    write(core, namespace, part_name(NAME, 1), part("g2", [banned, "127.0.2.11"]))
    write(core, namespace, BANLIST, head([], snapshot="g2", parts=1))
    for replica in (first, second):
        assert wait_until(partial(served, replica, "127.0.2.10"), timeout=5.0), replica.log()
        assert refused_everywhere(replica, banned)
        assert refused_everywhere(replica, "127.0.2.11")
    assert get(f"{first.url}/?n=3", source=bystander).status == 200


def test_a_replica_started_after_a_lift_never_bans_it_from_an_older_list(
    cluster: Cluster,
    namespace: str,
    postgres: PostgresServer,
    service_factory: ServiceFactory,
    tmp_path: Path,
) -> None:
    """Issue 19, item 5a: the operator stopped, an address was lifted long ago, a pod scales up.

    The operator's list still carries the address (in its snapshot and its head,
    with a lifts-seen from before the lift); the new replica, with a fresh state
    directory, must never refuse it, from its first answer on.
    """
    lifted, listed = "127.0.3.1", "127.0.3.2"
    engine = ledger.make_engine(postgres.url)
    ledger.ensure_schema(engine)
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    ledger.insert_hits(
        engine, [Hit(str(uuid.uuid4()), a, "/blacklisted", two_hours_ago) for a in (lifted, listed)]
    )
    with engine.begin() as connection:  # far older than any window a replica re-reads
        connection.execute(
            ledger.lifts.insert().values(
                ip_address=lifted, time=datetime.now(UTC) - timedelta(hours=1)
            )
        )
    engine.dispose()
    core = client.CoreV1Api(cluster.api_client())
    write(core, namespace, part_name(NAME, 1), part("g1", [lifted, listed]))
    write(core, namespace, BANLIST, head([lifted], snapshot="g1", parts=1))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=rbac(namespace))
    account = service_account_dir(cluster, namespace, tmp_path / "serviceaccount")
    api = urllib.parse.urlsplit(cluster.server)
    replica = service_factory(
        DATABASE_URL=postgres.url,
        SERVICE_ACCOUNT_DIR=str(account),
        KUBERNETES_SERVICE_HOST=str(api.hostname),
        KUBERNETES_SERVICE_PORT=str(api.port),
        BANLIST_CONFIGMAP=BANLIST,
        POD_NAMESPACE=namespace,
    )
    deadline = time.monotonic() + 30
    while not ready(replica):
        assert time.monotonic() < deadline, replica.log()
        assert served(replica, lifted), replica.log()
    assert refused_everywhere(replica, listed), replica.log()
    for _ in range(10):  # several lift polls and head applications later
        assert served(replica, lifted), replica.log()
        time.sleep(0.2)
    # The operator back: its next head says it saw the lift; a later hit bans again.
    write(core, namespace, BANLIST, head([], snapshot="g1", parts=1, lifts_seen=1))
    assert get(f"{replica.url}/blacklisted", source=lifted).status == 444
    assert refused_everywhere(replica, lifted)
