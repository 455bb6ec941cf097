"""From ``helm install`` and ``kubectl apply`` to a running service whose bans propagate.

The tests of this module share one deployment and run in file order: the
last one uninstalls the chart and deletes the resource.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from blacklist_devtools import stack
from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.network import CLIENT_ADDRESSES
from blacklist_devtools.stack import Deployed

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BANNED = CLIENT_ADDRESSES[0]
BYSTANDER = CLIENT_ADDRESSES[1]
LIFTED_WHILE_OPERATOR_DOWN = CLIENT_ADDRESSES[3]


def test_both_replicas_square_numbers(deployed: Deployed) -> None:
    urls = deployed.instance().service_urls
    assert len(urls) == 2
    assert len(set(urls)) == 2
    for url in urls:
        answer = get(f"{url}/?n=88", source=BYSTANDER)
        assert answer.status == 200
        assert answer.body == "7744.0"


def test_blacklisted_bans_on_every_replica_within_two_seconds(deployed: Deployed) -> None:
    found = deployed.instance()
    first, second = found.service_urls
    hit = get(f"{first}/blacklisted", source=BANNED)
    hit_at = time.monotonic()
    assert hit.status == 444
    assert get(f"{first}/?n=2", source=BANNED).status == 403

    def refused_by_second() -> bool:
        return get(f"{second}/?n=2", source=BANNED).status == 403

    assert wait_until(refused_by_second, timeout=2.0, interval=0.05)
    propagation = time.monotonic() - hit_at
    assert propagation <= 2.0, f"ban reached the second replica after {propagation:.2f} s"
    for url in found.service_urls:
        assert get(f"{url}/?n=3", source=BYSTANDER).body == "9.0"


def test_the_hit_is_in_the_ledger(deployed: Deployed) -> None:
    found = deployed.instance()

    def rows() -> list[tuple[str, str]]:
        return [row for row in stack.ledger_rows(found) if row[1] == BANNED]

    assert wait_until(lambda: bool(rows()), timeout=15)
    assert rows() == [("/blacklisted", BANNED)]


def test_one_alert_mail_arrives(deployed: Deployed) -> None:
    messages = deployed.smtp.wait_for(1, timeout=30)
    assert len(messages) == 1
    mail = messages[0]
    assert mail["To"] == "test@domain.com"
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    assert BANNED in body.get_content()


def test_status_counts_the_ban_and_reports_the_node_port(deployed: Deployed) -> None:
    def banned_count() -> int:
        return int(deployed.resource().get("status", {}).get("bannedCount", 0))

    assert wait_until(lambda: banned_count() == 1, timeout=15)
    service = stack.get_json(deployed.cluster, "service", deployed.name, "-n", deployed.namespace)
    node_port = service["spec"]["ports"][0]["nodePort"]
    assert deployed.resource()["status"]["nodePort"] == node_port
    banlist = stack.get_json(
        deployed.cluster, "configmap", f"{deployed.name}-banlist", "-n", deployed.namespace
    )
    assert BANNED in banlist["data"]["addresses"].split()


def test_a_lifted_ban_leaves_every_replica_within_five_seconds(deployed: Deployed) -> None:
    urls = deployed.instance().service_urls
    assert all(get(f"{url}/?n=2", source=BANNED).status == 403 for url in urls)
    lifted = deployed.cluster.kubectl(
        "exec", f"deploy/{deployed.name}", "-n", deployed.namespace, "--",
        "python", "-m", "blacklist_service", "lift", BANNED, "--reason", "e2e test",
    )  # fmt: skip
    lifted_at = time.monotonic()
    assert BANNED in lifted

    def served_everywhere() -> bool:
        return all(get(f"{url}/?n=2", source=BANNED).status == 200 for url in urls)

    assert wait_until(served_everywhere, timeout=5.0, interval=0.1)
    print(f"lift -> every replica {time.monotonic() - lifted_at:.2f} s")
    # The ledger keeps the hit; the ban list drops the address.
    assert [row for row in stack.ledger_rows(deployed.instance()) if row[1] == BANNED]
    banlist = stack.get_json(
        deployed.cluster, "configmap", f"{deployed.name}-banlist", "-n", deployed.namespace
    )
    assert BANNED not in banlist["data"]["addresses"].split()


def service_pods(deployed: Deployed) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance={deployed.name},app.kubernetes.io/component=service"
    found = stack.get_json(deployed.cluster, "pods", "-n", deployed.namespace, "-l", selector)
    return [pod for pod in found["items"] if not pod["metadata"].get("deletionTimestamp")]


def head_lines(deployed: Deployed) -> list[str]:
    head = stack.get_json(
        deployed.cluster, "configmap", f"{deployed.name}-banlist", "-n", deployed.namespace
    )
    return [line.split()[0] for line in head["data"]["addresses"].splitlines() if line.strip()]


def test_a_lift_made_while_the_operator_is_down_holds_on_a_new_replica(
    deployed: Deployed,
) -> None:
    """Issue 19, item 5: operator stopped, X lifted, a minute later a new pod, the operator back.

    The operator's ban list still carries X while it is down; the new pod must
    not ban X from it, and neither may any pod once the operator is back.
    """
    address = LIFTED_WHILE_OPERATOR_DOWN
    cluster = deployed.cluster

    def served_everywhere() -> bool:
        urls = deployed.instance().service_urls
        return len(urls) == 2 and all(
            get(f"{url}/?n=2", source=address).status == 200 for url in urls
        )

    first = deployed.instance().service_urls[0]
    assert get(f"{first}/blacklisted", source=address).status == 444
    assert wait_until(lambda: address in head_lines(deployed), timeout=10.0, interval=0.2)
    operator = f"{deployed.release}-blacklist-operator"
    replicas = stack.get_json(cluster, "deployment", operator, "-n", deployed.operator_namespace)[
        "spec"
    ]["replicas"]
    cluster.kubectl("scale", f"deployment/{operator}", "-n", deployed.operator_namespace,
                    "--replicas=0")  # fmt: skip
    try:
        assert wait_until(
            lambda: not stack.get_json(
                cluster, "pods", "-n", deployed.operator_namespace,
                "-l", "app.kubernetes.io/component=operator",
            )["items"],
            timeout=90.0,
            interval=1.0,
        )  # fmt: skip
        cluster.kubectl(
            "exec", f"deploy/{deployed.name}", "-n", deployed.namespace, "--",
            "python", "-m", "blacklist_service", "lift", address, "--reason", "e2e, operator down",
        )  # fmt: skip
        assert wait_until(served_everywhere, timeout=5.0, interval=0.1)
        assert address in head_lines(deployed)  # nobody dropped it: the operator is down
        time.sleep(65)  # past the minute replicas used to read lifts again
        # A new replica: its ReplicaSet replaces a deleted pod, with a fresh state directory.
        before = {pod["metadata"]["name"] for pod in service_pods(deployed)}
        cluster.kubectl("delete", "pod", sorted(before)[0], "-n", deployed.namespace)

        def replaced_and_ready() -> bool:
            pods = service_pods(deployed)
            names = {pod["metadata"]["name"] for pod in pods}
            return (
                len(pods) == 2
                and names != before
                and all(
                    any(c["type"] == "Ready" and c["status"] == "True"
                        for c in pod["status"].get("conditions", []))
                    for pod in pods
                )
            )  # fmt: skip

        assert wait_until(replaced_and_ready, timeout=120.0, interval=1.0)
        for _ in range(10):
            assert served_everywhere()
            time.sleep(0.5)
    finally:
        cluster.kubectl("scale", f"deployment/{operator}", "-n", deployed.operator_namespace,
                        f"--replicas={replicas}")  # fmt: skip
    assert wait_until(lambda: address not in head_lines(deployed), timeout=90.0, interval=1.0)
    for _ in range(10):
        assert served_everywhere()
        time.sleep(0.5)


def test_ban_duration_ends_bans_on_every_replica(deployed: Deployed) -> None:
    deployed.cluster.kubectl(
        "patch", "bls", deployed.name, "-n", deployed.namespace, "--type=merge",
        "-p", '{"spec":{"banDuration":"8s"}}',
    )  # fmt: skip

    urls: list[str] = []

    def rolled_out() -> bool:
        found = deployed.instance()
        deployment = stack.get_json(
            deployed.cluster, "deployment", deployed.name, "-n", deployed.namespace
        )
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        status = deployment.get("status", {})
        urls[:] = found.service_urls
        return (
            {"name": "BAN_DURATION", "value": "8"} in env
            and status.get("updatedReplicas") == status.get("replicas") == 2
            and status.get("availableReplicas") == 2
            and not status.get("terminatingReplicas")
            and len(urls) == 2
        )

    # The replicas of the rolled-out Deployment, as seen together (a pod of the roll may still
    # be stopping a moment after the Deployment counts it out).
    assert wait_until(rolled_out, timeout=120, interval=1.0)
    first, second = urls
    assert get(f"{first}/blacklisted", source=BYSTANDER).status == 444
    banned_at = time.monotonic()
    assert wait_until(
        lambda: get(f"{second}/?n=2", source=BYSTANDER).status == 403, timeout=2.0, interval=0.05
    )
    assert wait_until(
        lambda: all(get(f"{url}/?n=2", source=BYSTANDER).status == 200 for url in (first, second)),
        timeout=15.0,
        interval=0.2,
    )
    ended = time.monotonic() - banned_at
    assert 6.0 <= ended <= 14.0, f"an 8 s ban ended after {ended:.1f} s"


def test_the_database_password_is_only_in_its_secret(deployed: Deployed) -> None:
    password = deployed.instance().database_password
    assert len(password) >= 16
    for kind in ("configmaps", "deployments", "replicasets", "pods", "services", "events"):
        listed = deployed.cluster.kubectl("get", kind, "-n", deployed.namespace, "-o", "json")
        assert password not in listed, kind
    assert password not in json.dumps(deployed.resource())


def test_uninstall_keeps_the_crd_and_deleting_the_resource_cleans_up(
    deployed: Deployed,
) -> None:
    cluster = deployed.cluster
    stack.helm(
        cluster, deployed.helm_path, "uninstall", deployed.release,
        "--namespace", deployed.operator_namespace, "--wait",
    )  # fmt: skip
    crd = stack.get_json(cluster, "crd", "blacklistservices.blacklist.dev")
    assert crd["spec"]["names"]["shortNames"] == ["bls"]
    # Without the operator the finalizer would hold the resource; reinstall it to clean up.
    stack.helm(
        cluster, deployed.helm_path, "install", deployed.release, "chart",
        "--namespace", deployed.operator_namespace, "--wait", stack.TAKE_OWNERSHIP,
        *stack.operator_image_values(),
    )  # fmt: skip
    cluster.kubectl(
        "delete", "blacklistservice", deployed.name, "-n", deployed.namespace, "--timeout=60s"
    )

    def children() -> list[str]:
        kinds = "deployments,services,configmaps,secrets,pvc"
        selector = f"app.kubernetes.io/instance={deployed.name}"
        listed = stack.get_json(cluster, kinds, "-n", deployed.namespace, "-l", selector)
        return [item["metadata"]["name"] for item in listed["items"]]

    assert wait_until(lambda: not children(), timeout=60), children()
