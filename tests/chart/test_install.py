"""The chart installed into the local control plane, and what the operator may do there.

``helm install --wait`` must create the ServiceAccount, the RBAC and an operator
Deployment whose pod, the operator image run by the local node, becomes Ready.
Then the API server itself answers, through ``kubectl auth can-i
--as=system:serviceaccount:<namespace>:<serviceaccount>``, what the operator can
and cannot do, watching every namespace or only one. ``helm uninstall`` keeps
the CRD.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from blacklist_devtools import http, stack
from blacklist_devtools.kube import Cluster
from tests.chart.helm import CHART, CRD_NAME, EXAMPLES, Manifest, helm, render
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    wait_for,
)

pytestmark = pytest.mark.cluster

Check = tuple[str, str, tuple[str, ...]]
"""(verb, resource, further arguments of ``kubectl auth can-i``)."""

ALLOWED_IN_WATCHED_NAMESPACE: list[Check] = [
    ("get", "blacklistservices.blacklist.dev", ()),
    ("list", "blacklistservices.blacklist.dev", ()),
    ("watch", "blacklistservices.blacklist.dev", ()),
    ("patch", "blacklistservices.blacklist.dev", ()),
    ("patch", "blacklistservices.blacklist.dev", ("--subresource=status",)),
    ("update", "blacklistservices.blacklist.dev", ("--subresource=finalizers",)),
    *[
        (verb, resource, ())
        for resource in (
            "deployments.apps",
            "services",
            "configmaps",
            "persistentvolumeclaims",
            "serviceaccounts",
            "roles.rbac.authorization.k8s.io",
            "rolebindings.rbac.authorization.k8s.io",
            "networkpolicies.networking.k8s.io",
        )
        for verb in ("get", "list", "watch", "create", "patch")
    ],
    ("delete", "configmaps", ()),
    *[
        (verb, resource, ())
        for resource in (
            "ingresses.networking.k8s.io",
            "poddisruptionbudgets.policy",
            "horizontalpodautoscalers.autoscaling",
            "cronjobs.batch",
        )
        for verb in ("get", "list", "watch", "create", "patch", "delete")
    ],
    *[
        (verb, "servicemonitors.monitoring.coreos.com", ())
        for verb in ("get", "create", "patch", "delete")
    ],
    ("get", "secrets", ()),
    ("create", "secrets", ()),
    ("patch", "secrets", ()),
    ("create", "events", ()),
    ("create", "events.events.k8s.io", ()),
]
ALLOWED_CLUSTER_WIDE: list[Check] = [
    ("list", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("list", "namespaces", ()),
    ("watch", "namespaces", ()),
]
PERSISTENT_VOLUME_RIGHTS: list[Check] = [
    (verb, "persistentvolumes", ()) for verb in ("get", "create", "patch", "delete")
]
NEVER_ALLOWED: list[Check] = [
    ("get", "nodes", ()),
    ("delete", "namespaces", ()),
    ("create", "namespaces", ()),
    ("create", "clusterroles.rbac.authorization.k8s.io", ()),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ()),
    ("escalate", "roles.rbac.authorization.k8s.io", ()),
    ("bind", "roles.rbac.authorization.k8s.io", ()),
    ("bind", "clusterroles.rbac.authorization.k8s.io", ()),
    ("impersonate", "users", ()),
    ("impersonate", "serviceaccounts", ()),
    ("get", "pods", ()),
    ("list", "pods", ()),
    ("watch", "pods", ()),
    ("create", "pods", ()),
    ("delete", "pods", ()),
    # Secrets by name only: the operator cannot enumerate or watch the Secrets of a namespace.
    ("list", "secrets", ()),
    ("watch", "secrets", ()),
    ("delete", "secrets", ()),
    ("delete", "deployments.apps", ()),
    ("list", "persistentvolumes", ()),
    ("list", "servicemonitors.monitoring.coreos.com", ()),
    ("create", "pods", ("--subresource=exec",)),
    ("create", "serviceaccounts", ("--subresource=token",)),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", ()),
    ("update", "events", ()),
]


def can_i(cluster: Cluster, subject: str, namespace: str, check: Check) -> bool:
    """``kubectl auth can-i`` as ``subject``; later ``--namespace`` in ``check`` wins."""
    verb, resource, extra = check
    answer = cluster.kubectl(
        "auth", "can-i", verb, resource, f"--as={subject}", f"--namespace={namespace}", *extra,
        check=False,
    )  # fmt: skip
    return answer.strip() == "yes"


def assert_rights(
    cluster: Cluster, subject: str, namespace: str, allowed: list[Check], denied: list[Check]
) -> None:
    """Every check of ``allowed`` answers yes and every one of ``denied`` no, in ``namespace``."""
    checks = [(True, check) for check in allowed] + [(False, check) for check in denied]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = pool.map(lambda item: can_i(cluster, subject, namespace, item[1]), checks)
        wrong = [
            ("yes" if answer else "no", check)
            for (expected, check), answer in zip(checks, answers, strict=True)
            if answer != expected
        ]
    assert not wrong, f"unexpected answers of kubectl auth can-i for {subject}: {wrong}"


@pytest.fixture
def release(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A unique release name; the release is uninstalled after the test if it is left."""
    name = f"bo-{uuid.uuid4().hex[:8]}"
    yield name
    helm(
        "uninstall", name, "--namespace", namespace, "--kubeconfig", str(cluster.kubeconfig),
        "--wait", "--timeout", "30s", "--ignore-not-found",
        check=False,
    )  # fmt: skip


def install(cluster: Cluster, release: str, namespace: str, *set_values: str) -> None:
    """``helm install --wait`` of the chart into ``namespace``: the operator image runs for real."""
    arguments = [
        "install", release, str(CHART), "--namespace", namespace,
        "--kubeconfig", str(cluster.kubeconfig), "--wait", "--timeout", "120s",
    ]  # fmt: skip
    # The test bed's images as the operator's defaults, for resources that name none; the
    # shared CRD taken over from whichever release or test applied it last.
    arguments += [stack.TAKE_OWNERSHIP, *stack.default_image_values()]
    for value in set_values:
        arguments += ["--set", value]
    helm(*arguments)


def get_json(cluster: Cluster, *arguments: str) -> Manifest:
    """``kubectl get ... -o json`` as a dict."""
    result: Manifest = json.loads(cluster.kubectl("get", *arguments, "-o", "json"))
    return result


def dry_run_in(cluster: Cluster, namespace: str, manifests: list[Manifest]) -> None:
    """Validate manifests against the API server (schemas, CEL rules) without creating them."""
    for manifest in manifests:
        manifest["metadata"]["namespace"] = namespace
    listed = {"apiVersion": "v1", "kind": "List", "items": manifests}
    cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(listed))


# service_monitor_crd: without the CRD, `kubectl auth can-i` cannot tell the resource
# "servicemonitors" from its group and answers no, whatever the role says.
def test_install_watching_all_namespaces(
    cluster: Cluster, service_monitor_crd: Cluster, namespace: str, release: str
) -> None:
    install(cluster, release, namespace)
    fullname = f"{release}-blacklist-operator"
    get_json(cluster, "serviceaccount", fullname, "-n", namespace)
    get_json(cluster, "clusterrole", fullname)
    get_json(cluster, "clusterrolebinding", fullname)
    deployment = get_json(cluster, "deployment", fullname, "-n", namespace)
    # Two replicas, both Ready: the leader, and the standby that answers its probes.
    assert deployment["status"]["readyReplicas"] == 2
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")
    assert len(pods["items"]) == 2
    leaders = []
    for pod in pods["items"]:
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"]
        assert ready == "True"
        # The operator's metrics answer on the pod's port named metrics, the Service's endpoint.
        (container,) = pod["spec"]["containers"]
        port = {item["name"]: item["containerPort"] for item in container["ports"]}["metrics"]
        scraped = http.get(f"http://{pod['status']['podIP']}:{port}/metrics", timeout=5)
        assert scraped.status == 200
        assert 'blacklist_operator_reconciles_total{outcome="ok"}' in scraped.body
        if "\nblacklist_operator_leader 1.0\n" in scraped.body:
            leaders.append(pod["metadata"]["name"])
    # One leader, named in the Lease by its pod name.
    assert len(leaders) == 1
    held = get_json(cluster, "lease", fullname, "-n", namespace)
    assert held["spec"]["holderIdentity"] == leaders[0]
    slices = get_json(
        cluster, "endpointslices", "-n", namespace,
        "-l", f"kubernetes.io/service-name={fullname}-metrics",
    )  # fmt: skip
    addresses = {
        address
        for item in slices["items"]
        for endpoint in item.get("endpoints") or []
        for address in endpoint["addresses"]
    }
    assert addresses == {pod["status"]["podIP"] for pod in pods["items"]}

    subject = f"system:serviceaccount:{namespace}:{fullname}"
    allowed = ALLOWED_IN_WATCHED_NAMESPACE + ALLOWED_CLUSTER_WIDE + PERSISTENT_VOLUME_RIGHTS
    assert_rights(cluster, subject, namespace, allowed, NEVER_ALLOWED)
    # The leader election: its one Lease by name, in the release's namespace only.
    lease = f"leases.coordination.k8s.io/{fullname}"
    assert_rights(
        cluster, subject, namespace,
        [("get", lease, ()), ("update", lease, ()), ("create", "leases.coordination.k8s.io", ())],
        [("update", "leases.coordination.k8s.io/another", ()), ("delete", lease, ()),
         ("list", "leases.coordination.k8s.io", ())],
    )  # fmt: skip
    assert_rights(cluster, subject, "default", [], [("get", lease, ()), ("update", lease, ())])
    assert_rights(cluster, subject, "default", ALLOWED_IN_WATCHED_NAMESPACE, [])

    # The CRD the chart installed accepts the chart's BlacklistService and the examples.
    chart_resource = [
        manifest
        for manifest in render("blacklistService.enabled=true", namespace=namespace)
        if manifest["kind"] == "BlacklistService"
    ]
    examples = [
        document
        for example in sorted(EXAMPLES.glob("*.yaml"))
        for document in yaml.safe_load_all(example.read_text())
        if document
    ]
    dry_run_in(cluster, namespace, chart_resource + examples)

    helm("uninstall", release, "--namespace", namespace, "--kubeconfig", str(cluster.kubeconfig),
         "--wait", "--timeout", "30s")  # fmt: skip
    assert not cluster.kubectl("get", "clusterrole", fullname, "--ignore-not-found").strip()
    # crds.keep: the CRD (and every BlacklistService with it) outlives the release.
    kept = get_json(cluster, "crd", CRD_NAME)
    assert kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_install_scoped_to_one_namespace(
    cluster: Cluster, service_monitor_crd: Cluster, namespace: str, release: str
) -> None:
    install(
        cluster, release, namespace,
        f"operator.watchNamespaces={{{namespace}}}", "rbac.persistentVolumes=false",
    )  # fmt: skip
    fullname = f"{release}-blacklist-operator"
    get_json(cluster, "role", fullname, "-n", namespace)
    get_json(cluster, "rolebinding", fullname, "-n", namespace)
    subject = f"system:serviceaccount:{namespace}:{fullname}"
    assert_rights(
        cluster, subject, namespace,
        ALLOWED_IN_WATCHED_NAMESPACE + ALLOWED_CLUSTER_WIDE,
        NEVER_ALLOWED + PERSISTENT_VOLUME_RIGHTS,
    )  # fmt: skip
    assert_rights(cluster, subject, "default", [], ALLOWED_IN_WATCHED_NAMESPACE)
    assert_rights(cluster, subject, "kube-system", [], ALLOWED_IN_WATCHED_NAMESPACE)


def service_account_cluster(cluster: Cluster, namespace: str, account: str, work: Path) -> Cluster:
    """The cluster as seen with a token of ``account``: only the rights its RBAC grants."""
    admin = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").strip()
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {"name": account, "context": {"cluster": admin["clusters"][0]["name"], "user": account}}
        ],
        "current-context": account,
    }
    path = work / "operator.kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    path.chmod(0o600)
    return dataclasses.replace(cluster, kubeconfig=path)


def test_the_operator_runs_with_exactly_the_charts_rbac(
    service_monitor_crd: Cluster, namespace: str, release: str, tmp_path: Path
) -> None:
    cluster = service_monitor_crd
    # The chart's RBAC, its operator stopped; the operator of this tree runs in its place
    # with a token of the chart's ServiceAccount, so every call it makes meets that RBAC.
    install(cluster, release, namespace, "replicaCount=0")
    fullname = f"{release}-blacklist-operator"
    # Only this namespace, so that it never acts on other tests' resources; the rights
    # are still those of the cluster-wide ClusterRole.
    operator = OperatorProcess(
        service_account_cluster(cluster, namespace, fullname, tmp_path),
        tmp_path,
        f"--namespace={namespace}",
    ).start()
    try:
        # With every optional child whose rights are the chart's: the ServiceMonitor and the
        # backup CronJob too.
        apply_manifest(
            cluster,
            blacklist_service(
                "rbac",
                namespace,
                metrics={"serviceMonitor": True},
                database={"backup": {"schedule": "@daily"}},
            ),
        )

        def ready() -> bool:
            body = json.loads(cluster.kubectl("get", "bls", "rbac", "-n", namespace, "-o", "json"))
            return condition(body, "Ready").get("status") == "True"

        wait_for(ready, 120, "Ready under the chart's RBAC", operator)
        secret = get_json(cluster, "secret", "rbac-db", "-n", namespace)
        assert set(secret["data"]) == {"username", "password"}
        # Deleted children come back (their watches work), and no call was refused.
        cluster.kubectl("delete", "configmap", "rbac-db", "-n", namespace)
        wait_for(
            lambda: bool(
                cluster.kubectl(
                    "get", "configmap", "rbac-db", "-n", namespace, "--ignore-not-found"
                )
            ),
            30,
            "ConfigMap rbac-db restored",
            operator,
        )
        assert get_json(cluster, "servicemonitor", "rbac", "-n", namespace)
        assert get_json(cluster, "cronjob", "rbac-backup", "-n", namespace)
        cluster.kubectl(
            "patch", "bls", "rbac", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"metrics": {"serviceMonitor": False},
                                       "database": {"backup": None}}}),
        )  # fmt: skip
        wait_for(
            lambda: (
                not cluster.kubectl(
                    "get", "servicemonitor", "rbac", "-n", namespace, "--ignore-not-found"
                )
            ),
            30,
            "ServiceMonitor rbac deleted",
            operator,
        )
        wait_for(
            lambda: (
                not cluster.kubectl(
                    "get", "cronjob", "rbac-backup", "-n", namespace, "--ignore-not-found"
                )
            ),
            30,
            "CronJob rbac-backup deleted",
            operator,
        )
        # An RBAC denial reads 'x is forbidden: User "system:serviceaccount:..." cannot ...'.
        log = operator.log()
        assert "cannot list" not in log, log[-3000:]
        assert "is forbidden: User" not in log, log[-3000:]
    finally:
        cluster.kubectl("delete", "bls", "rbac", "-n", namespace, "--wait=true", check=False)
        operator.stop()
