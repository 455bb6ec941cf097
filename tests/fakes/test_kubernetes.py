"""The in-memory API keeps the promises the reconcile tests rely on, as a real API server does."""

from __future__ import annotations

from typing import Any

import pytest

from blacklist_operator.kube.api import ApiError
from tests.fakes.kubernetes import FakeKubernetesApi, matches


def config_map(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "team", "labels": {"app": "demo"}},
        "data": data,
    }


def stored(api: FakeKubernetesApi) -> dict[str, Any]:
    body = api.get("v1", "ConfigMap", "team", "settings")
    assert body is not None
    return body


def test_an_apply_creates_then_changes_only_what_differs() -> None:
    api = FakeKubernetesApi()
    first = api.apply(config_map(a="1"))
    assert first.created
    assert first.body["metadata"]["generation"] == 1
    assert first.body["metadata"]["uid"]
    again = api.apply(config_map(a="1"))
    assert not again.created
    assert again.body["metadata"]["resourceVersion"] == first.body["metadata"]["resourceVersion"]
    changed = api.apply(config_map(a="2"))
    assert changed.body["data"] == {"a": "2"}
    assert changed.body["metadata"]["resourceVersion"] != first.body["metadata"]["resourceVersion"]
    assert changed.body["metadata"]["uid"] == first.body["metadata"]["uid"]


def test_a_field_no_longer_applied_is_removed_unless_another_manager_owns_it() -> None:
    api = FakeKubernetesApi()
    api.apply(config_map(a="1", b="2"))
    api.apply(config_map(c="3"), field_manager="someone")
    api.apply(config_map(a="1"))
    assert stored(api)["data"] == {"a": "1", "c": "3"}
    assert api.managers("v1", "ConfigMap", "team", "settings") == {"blacklist-operator", "someone"}


def test_a_forced_apply_takes_back_a_field_someone_changed() -> None:
    api = FakeKubernetesApi()
    api.apply(config_map(a="1"))
    api.merge_patch("v1", "ConfigMap", "team", "settings", {"data": {"a": "evil", "x": "y"}})
    api.apply(config_map(a="1"))
    assert stored(api)["data"] == {"a": "1", "x": "y"}
    api.apply(config_map(a="mine"), field_manager="someone")
    api.apply(config_map(a="1"))
    assert stored(api)["data"]["a"] == "1"


def test_the_generation_counts_changes_outside_metadata_and_status() -> None:
    api = FakeKubernetesApi()
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "demo", "namespace": "team"},
        "spec": {"replicas": 1},
    }
    api.apply(deployment)
    api.set_status("apps/v1", "Deployment", "team", "demo", {"availableReplicas": 1})
    deployment["metadata"]["labels"] = {"a": "b"}
    api.apply(deployment)
    body = api.get("apps/v1", "Deployment", "team", "demo")
    assert body is not None
    assert body["metadata"]["generation"] == 1
    assert body["status"] == {"availableReplicas": 1}
    deployment["spec"]["replicas"] = 2
    assert api.apply(deployment).body["metadata"]["generation"] == 2


def test_status_is_a_subresource() -> None:
    api = FakeKubernetesApi()
    resource = {
        "apiVersion": "blacklist.dev/v1",
        "kind": "BlacklistService",
        "metadata": {"name": "demo", "namespace": "team"},
        "spec": {"replicas": 1},
        "status": {"ignored": True},
    }
    api.apply(resource, field_manager="kubectl")
    api.apply_status("team", "demo", {"observedGeneration": 1}, "blacklist-operator")
    body = api.get("blacklist.dev/v1", "BlacklistService", "team", "demo")
    assert body is not None
    assert body["status"] == {"observedGeneration": 1}
    assert body["metadata"]["generation"] == 1
    with pytest.raises(ApiError) as missing:
        api.apply_status("team", "other", {}, "blacklist-operator")
    assert missing.value.status == 404


def test_writes_guarded_by_a_resource_version_refuse_a_stale_one() -> None:
    api = FakeKubernetesApi()
    body = api.apply(config_map(a="1")).body
    stale = {**body, "metadata": {**body["metadata"]}}
    api.apply(config_map(a="2"))
    assert api.replace({**stale, "data": {"a": "3"}}) is None
    with pytest.raises(ApiError) as conflict:
        api.merge_patch(
            "v1", "ConfigMap", "team", "settings", {"metadata": {"resourceVersion": "1"}}
        )
    assert conflict.value.status == 409
    current = stored(api)
    replaced = api.replace({**current, "data": {"a": "4"}})
    assert replaced is not None
    assert replaced["data"] == {"a": "4"}
    assert replaced["metadata"]["uid"] == body["metadata"]["uid"]


def test_create_refuses_an_existing_name_and_delete_a_missing_or_other_object() -> None:
    api = FakeKubernetesApi()
    created = api.create(config_map(a="1"))
    assert created is not None
    assert api.create(config_map(a="2")) is None
    assert not api.delete("v1", "ConfigMap", "team", "settings", uid="another")
    assert api.delete("v1", "ConfigMap", "team", "settings", uid=created["metadata"]["uid"])
    assert not api.delete("v1", "ConfigMap", "team", "settings")


def test_deleting_an_owner_deletes_its_dependents() -> None:
    api = FakeKubernetesApi()
    owner = api.apply(config_map(a="1")).body
    reference = {"kind": "ConfigMap", "name": "settings", "uid": owner["metadata"]["uid"]}
    dependent = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "team", "ownerReferences": [reference]},
    }
    api.apply(dependent)
    api.delete("v1", "ConfigMap", "team", "settings")
    assert api.get("v1", "Secret", "team", "s") is None


def test_lists_filter_by_namespace_and_label_selector() -> None:
    api = FakeKubernetesApi()
    api.apply(config_map(a="1"))
    other = config_map()
    other["metadata"].update(name="other", labels={"app": "web", "tier": "front"})
    api.apply(other)
    assert [body["metadata"]["name"] for body in api.list("v1", "ConfigMap", "team")] == [
        "other",
        "settings",
    ]
    assert [body["metadata"]["name"] for body in api.list("v1", "ConfigMap", None, "app=demo")] == [
        "settings"
    ]
    assert api.list("v1", "ConfigMap", "elsewhere") == []
    labels = {"app": "web", "tier": "front"}
    assert matches(labels, "app==web,tier")
    assert matches(labels, "app!=demo,!missing")
    assert not matches(labels, "app=web,tier!=front")
    assert not matches(labels, "missing")


def test_an_unserved_kind_and_a_refused_kind() -> None:
    api = FakeKubernetesApi(unserved=frozenset({"ServiceMonitor"}))
    assert not api.serves("monitoring.coreos.com/v1", "ServiceMonitor")
    assert api.serves("v1", "ConfigMap")
    api.refuse("ConfigMap", 403)
    with pytest.raises(ApiError) as refused:
        api.apply(config_map(a="1"))
    assert refused.value.status == 403
    api.refuse("ConfigMap", None)
    assert api.apply(config_map(a="1")).created


def test_a_watch_of_one_object_starts_with_it() -> None:
    api = FakeKubernetesApi()
    assert list(api.watch_object("v1", "ConfigMap", "team", "settings", 1)) == []
    api.apply(config_map(a="1"))
    (event,) = api.watch_object("v1", "ConfigMap", "team", "settings", 1)
    assert event["type"] == "ADDED"
    assert event["object"]["data"] == {"a": "1"}
