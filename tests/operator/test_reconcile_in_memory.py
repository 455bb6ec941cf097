"""The reconcile against the in-memory API (``tests/fakes/kubernetes.py``): milliseconds.

What the reconcile decides, proved without a cluster: the children a first
reconcile creates and their owner references, the drift it takes back, the
foreign object it leaves alone (ChildConflict), the Ready condition it derives
from the Deployments' status, the optional child it deletes when the spec no
longer asks for it, a refused write reported as ApplyFailed, and a claim naming
another tenant's hostPath volume that gets nothing. What only the API server and
the node prove (validation, defaulting, garbage collection, binding, real pods,
Events, the operator's own retries) stays in the cluster tests
(``test_reconcile.py``, ``test_child_conflict.py``, ``test_volume_squatting.py``).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from blacklist_operator import API_VERSION, FIELD_MANAGER
from blacklist_operator.builders.naming import VOLUME_OWNER_ANNOTATION, persistent_volume_name
from blacklist_operator.model.resource import SpecError, parse
from blacklist_operator.reconcile.children import reconcile
from blacklist_operator.reconcile.outcome import Outcome
from blacklist_operator.reconcile.readiness import deployment_progress, refresh_status
from blacklist_operator.runtime.config import AddressMap, OperatorConfig
from blacklist_operator.runtime.state import Runtime
from tests.fakes.kubernetes import FakeKubernetesApi

NAMESPACE = "team"
LOGGER = logging.getLogger("test")
# Every child of a plain resource with 2 replicas: (apiVersion, kind, name, component).
CHILDREN = [
    ("v1", "Secret", "demo-db", "database"),
    ("v1", "PersistentVolumeClaim", "demo-postgres", "database"),
    ("v1", "ConfigMap", "demo-db", "database"),
    ("v1", "Service", "demo-postgres", "database"),
    ("networking.k8s.io/v1", "NetworkPolicy", "demo-postgres", "database"),
    ("apps/v1", "Deployment", "demo-postgres", "database"),
    ("v1", "ServiceAccount", "demo", "service"),
    ("rbac.authorization.k8s.io/v1", "Role", "demo-banlist-reader", "service"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "demo-banlist-reader", "service"),
    ("v1", "Service", "demo", "service"),
    ("apps/v1", "Deployment", "demo", "service"),
    ("policy/v1", "PodDisruptionBudget", "demo", "service"),
]


def runtime_of(api: FakeKubernetesApi, config: OperatorConfig | None = None) -> Runtime:
    return Runtime(
        config=config or OperatorConfig(),
        api=api,
        addresses=AddressMap(None),
        executor=ThreadPoolExecutor(1),
    )


def submit(
    api: FakeKubernetesApi, name: str = "demo", namespace: str = NAMESPACE, **spec: Any
) -> dict[str, Any]:
    """``kubectl apply --server-side`` of a BlacklistService; the stored body."""
    manifest = {
        "apiVersion": API_VERSION,
        "kind": "BlacklistService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return api.apply(manifest, field_manager="kubectl").body


def resource(
    api: FakeKubernetesApi, name: str = "demo", namespace: str = NAMESPACE
) -> dict[str, Any]:
    body = api.get(API_VERSION, "BlacklistService", namespace, name)
    assert body is not None
    return body


def run(runtime: Runtime, api: FakeKubernetesApi, name: str = "demo") -> Outcome:
    """One reconcile of the resource as the API holds it now."""
    assert isinstance(runtime.api, FakeKubernetesApi)
    return reconcile(runtime, resource(api, name), LOGGER)


def child(api: FakeKubernetesApi, api_version: str, kind: str, name: str) -> dict[str, Any]:
    body = api.get(api_version, kind, NAMESPACE, name)
    assert body is not None, (kind, name)
    return body


def ready(api: FakeKubernetesApi, name: str = "demo") -> dict[str, Any]:
    conditions = (resource(api, name).get("status") or {}).get("conditions") or []
    (condition,) = [item for item in conditions if item["type"] == "Ready"]
    return dict(condition)


def available(api: FakeKubernetesApi, name: str) -> None:
    """The Deployment controller's status of Deployment ``name`` with every replica available."""
    deployment = child(api, "apps/v1", "Deployment", name)
    replicas = deployment["spec"].get("replicas", 1)
    api.set_status(
        "apps/v1",
        "Deployment",
        NAMESPACE,
        name,
        {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        },
    )


def watch_deployments(runtime: Runtime, api: FakeKubernetesApi) -> None:
    """What the Deployments' watch tells the runtime: each one's progress as the API holds it."""
    for deployment in api.list("apps/v1", "Deployment", NAMESPACE):
        name = deployment["metadata"]["name"]
        runtime.deployments[NAMESPACE, name] = deployment_progress(deployment)


def test_a_first_reconcile_creates_every_child_owned_by_the_resource() -> None:
    api = FakeKubernetesApi()
    uid = submit(api, replicas=2)["metadata"]["uid"]
    outcome = run(runtime_of(api), api)

    assert outcome.failures == []
    assert outcome.conflicts == []
    assert sorted(outcome.created) == sorted(f"{kind} {name}" for _, kind, name, _ in CHILDREN)
    for api_version, kind, name, component in CHILDREN:
        metadata = child(api, api_version, kind, name)["metadata"]
        labels = metadata["labels"]
        assert labels["app.kubernetes.io/managed-by"] == FIELD_MANAGER, (kind, name)
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/component"] == component, (kind, name)
        (owner,) = metadata["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("BlacklistService", "demo", uid)
        assert owner["controller"] is True, (kind, name)
    assert {body["metadata"]["name"] for body in api.list("apps/v1", "Deployment", NAMESPACE)} == {
        "demo",
        "demo-postgres",
    }
    service = child(api, "v1", "Service", "demo")
    assert service["spec"]["ports"][0]["port"] == 5004
    assert child(api, "apps/v1", "Deployment", "demo")["spec"]["replicas"] == 2
    # Every field of a child is applied under the operator's field manager alone.
    assert api.managers("apps/v1", "Deployment", NAMESPACE, "demo") == {FIELD_MANAGER}


def test_the_status_says_what_the_deployments_say() -> None:
    api = FakeKubernetesApi()
    submit(api, replicas=2)
    runtime = runtime_of(api)
    outcome = run(runtime, api)
    assert not outcome.ready
    condition = ready(api)
    assert (condition["status"], condition["reason"]) == ("False", "ServiceUnavailable")
    assert condition["observedGeneration"] == 1
    assert "Deployment demo is rolling out" in condition["message"]

    available(api, "demo")
    available(api, "demo-postgres")
    assert run(runtime, api).ready
    status = resource(api)["status"]
    assert ready(api)["status"] == "True"
    assert (status["replicas"], status["readyReplicas"], status["observedGeneration"]) == (2, 2, 1)
    # A replica lost: the refresh from the Deployments' watch turns Ready False.
    deployment = child(api, "apps/v1", "Deployment", "demo")
    api.set_status(
        "apps/v1",
        "Deployment",
        NAMESPACE,
        "demo",
        {**deployment["status"], "readyReplicas": 1, "availableReplicas": 1},
    )
    watch_deployments(runtime, api)
    assert not refresh_status(runtime, resource(api))
    assert ready(api)["status"] == "False"
    assert resource(api)["status"]["readyReplicas"] == 1
    available(api, "demo")
    watch_deployments(runtime, api)
    assert refresh_status(runtime, resource(api))
    assert ready(api)["status"] == "True"


def test_a_second_reconcile_changes_nothing() -> None:
    api = FakeKubernetesApi()
    submit(api, replicas=2)
    runtime = runtime_of(api)
    run(runtime, api)
    versions = {key: body["metadata"]["resourceVersion"] for key, body in api.objects.items()}
    writes = len(api.writes)

    outcome = run(runtime, api)

    assert outcome.created == []
    assert outcome.failures == []
    assert {key: body["metadata"]["resourceVersion"] for key, body in api.objects.items()} == (
        versions
    )
    # Applies that change nothing, and no status write: it is already what it would be.
    assert {verb for verb, _, _ in api.writes[writes:]} == {"apply"}


def test_drift_is_taken_back_and_a_deleted_child_is_recreated() -> None:
    api = FakeKubernetesApi()
    submit(api, replicas=2)
    runtime = runtime_of(api)
    run(runtime, api)
    secret = child(api, "v1", "Secret", "demo-db")
    api.merge_patch("apps/v1", "Deployment", NAMESPACE, "demo", {"spec": {"replicas": 5}})
    api.merge_patch("v1", "ConfigMap", NAMESPACE, "demo-db", {"data": {"host": "evil"}})
    api.delete("v1", "Service", NAMESPACE, "demo-postgres")
    # The watch of Services tells the reconcile that its child is gone.
    runtime.owned_children.forget(NAMESPACE, "Service", "demo-postgres")

    outcome = run(runtime, api)

    assert outcome.created == ["Service demo-postgres"]
    assert child(api, "apps/v1", "Deployment", "demo")["spec"]["replicas"] == 2
    assert (
        child(api, "v1", "ConfigMap", "demo-db")["data"]["host"] == f"demo-postgres.{NAMESPACE}.svc"
    )
    assert child(api, "v1", "Service", "demo-postgres")["metadata"]["ownerReferences"]
    # The generated password is kept: the Secret is never applied over.
    assert child(api, "v1", "Secret", "demo-db")["data"] == secret["data"]


def test_a_spec_change_is_applied() -> None:
    api = FakeKubernetesApi()
    submit(api, replicas=2)
    runtime = runtime_of(api)
    run(runtime, api)

    submit(api, replicas=3, image="registry.example/svc:2", nodePort=30123)
    assert resource(api)["metadata"]["generation"] == 2
    run(runtime, api)

    deployment = child(api, "apps/v1", "Deployment", "demo")
    assert deployment["spec"]["replicas"] == 3
    (container,) = [
        item for item in deployment["spec"]["template"]["spec"]["containers"]
        if item["name"] == "service"
    ]  # fmt: skip
    assert container["image"] == "registry.example/svc:2"
    assert child(api, "v1", "Service", "demo")["spec"]["ports"][0]["nodePort"] == 30123
    assert resource(api)["status"]["observedGeneration"] == 2


def test_a_foreign_object_with_a_childs_name_is_left_unchanged_and_reported() -> None:
    api = FakeKubernetesApi()
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "demo", "namespace": NAMESPACE, "labels": {"team": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080}]},
    }
    before = api.apply(foreign, field_manager="kubectl").body
    submit(api, replicas=2)
    runtime = runtime_of(api)

    outcome = run(runtime, api)

    assert child(api, "v1", "Service", "demo") == before
    assert [reason for reason, _ in outcome.warnings] == ["ChildConflict"]
    assert outcome.conflicts
    assert "Service demo exists" in outcome.conflicts[0]
    condition = ready(api)
    assert (condition["status"], condition["reason"]) == ("False", "ChildConflict")
    # The other children are there, and a status refresh does not hide the conflict.
    assert api.get("apps/v1", "Deployment", NAMESPACE, "demo") is not None
    available(api, "demo")
    available(api, "demo-postgres")
    watch_deployments(runtime, api)
    assert not refresh_status(runtime, resource(api))
    assert ready(api)["reason"] == "ChildConflict"

    # Its owner removes it: the next reconcile (the conflict retry) creates ours.
    api.delete("v1", "Service", NAMESPACE, "demo")
    outcome = run(runtime, api)
    assert outcome.created == ["Service demo"]
    assert outcome.conflicts == []
    assert child(api, "v1", "Service", "demo")["metadata"]["ownerReferences"]
    assert ready(api)["reason"] != "ChildConflict"


def test_an_optional_child_no_longer_asked_for_is_deleted() -> None:
    api = FakeKubernetesApi()
    submit(api, replicas=2, ingress={"host": "bans.example.com"}, metrics={"serviceMonitor": True})
    runtime = runtime_of(api)
    outcome = run(runtime, api)
    assert {"Ingress demo", "ServiceMonitor demo"} <= set(outcome.created)

    submit(api, replicas=2)
    run(runtime, api)

    assert api.get("networking.k8s.io/v1", "Ingress", NAMESPACE, "demo") is None
    assert api.get("monitoring.coreos.com/v1", "ServiceMonitor", NAMESPACE, "demo") is None
    assert api.get("apps/v1", "Deployment", NAMESPACE, "demo") is not None
    # One replica asks for no disruption budget: that one goes too.
    submit(api, replicas=1)
    run(runtime, api)
    assert api.get("policy/v1", "PodDisruptionBudget", NAMESPACE, "demo") is None


def test_an_optional_child_of_someone_else_is_not_deleted() -> None:
    api = FakeKubernetesApi()
    foreign = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "demo", "namespace": NAMESPACE},
        "spec": {"rules": [{"host": "web.example.com"}]},
    }
    api.apply(foreign, field_manager="kubectl")
    submit(api, replicas=2)
    run(runtime_of(api), api)
    assert api.get("networking.k8s.io/v1", "Ingress", NAMESPACE, "demo") is not None


def test_a_service_monitor_without_its_crd_is_a_warning_not_a_failure() -> None:
    api = FakeKubernetesApi(unserved=frozenset({"ServiceMonitor"}))
    submit(api, replicas=2, metrics={"serviceMonitor": True})
    outcome = run(runtime_of(api), api)
    assert outcome.failures == []
    assert [reason for reason, _ in outcome.warnings] == ["ServiceMonitorUnavailable"]
    assert ready(api)["reason"] == "ServiceUnavailable"


def test_a_refused_child_is_reported_and_retried() -> None:
    api = FakeKubernetesApi()
    api.refuse("NetworkPolicy", 403)
    submit(api, replicas=2)
    runtime = runtime_of(api)
    outcome = run(runtime, api)
    assert len(outcome.failures) == 1
    assert "NetworkPolicy demo-postgres" in outcome.failures[0]
    assert ready(api)["reason"] == "ApplyFailed"
    # Everything else was applied; the retry after 5 s doubles while the refusal lasts.
    assert api.get("apps/v1", "Deployment", NAMESPACE, "demo") is not None
    assert runtime.retry_delay((NAMESPACE, "demo"), failed=True) == 10.0

    api.refuse("NetworkPolicy", None)
    assert run(runtime, api).failures == []
    assert ready(api)["reason"] != "ApplyFailed"


def test_a_spec_the_model_refuses_is_reported_as_invalid() -> None:
    api = FakeKubernetesApi()
    submit(api, replicas=2, ingress={"host": "Not A Host"})
    with pytest.raises(SpecError):
        run(runtime_of(api), api)
    condition = ready(api)
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSpec")
    assert "spec.ingress.host" in condition["message"]
    assert api.list("apps/v1", "Deployment", NAMESPACE) == []


def test_a_claim_naming_another_tenants_volume_takes_nothing() -> None:
    api = FakeKubernetesApi()
    runtime = runtime_of(api, OperatorConfig(allowed_host_path_prefixes=("/data",)))
    victims_volume = persistent_volume_name(parse({"metadata": {"name": "db", "namespace": "b"}}))
    squatting_claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "db-postgres", "namespace": "a"},
        "spec": {"storageClassName": "", "volumeName": victims_volume},
    }
    api.apply(squatting_claim, field_manager="kubectl")
    storage = {"hostPath": "/data/mine", "size": "256Mi"}
    for namespace in ("a", "b"):
        body = submit(api, "db", namespace, database={"storage": storage})
        reconcile(runtime, body, LOGGER)

    # The squatter's resource made its own volume, not the victim's, and left the claim alone.
    assert api.get("v1", "PersistentVolumeClaim", "a", "db-postgres") is not None
    volumes = {body["metadata"]["name"] for body in api.list("v1", "PersistentVolume")}
    assert volumes == {victims_volume, persistent_volume_name(parse(resource(api, "db", "a")))}
    volume = api.get("v1", "PersistentVolume", None, victims_volume)
    assert volume is not None
    assert volume["metadata"]["annotations"][VOLUME_OWNER_ANNOTATION] == "b/db"
    assert volume["spec"]["claimRef"]["namespace"] == "b"
    assert volume["spec"]["hostPath"]["path"] == "/data/b/db"
    claim = api.get("v1", "PersistentVolumeClaim", "b", "db-postgres")
    assert claim is not None
    assert claim["spec"]["volumeName"] == victims_volume
    conditions = resource(api, "db", "a")["status"]["conditions"]
    assert [item["reason"] for item in conditions if item["type"] == "Ready"] == ["ChildConflict"]
