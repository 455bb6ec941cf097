"""The status fields kubectl and the scale subresource read, built from the Deployment's status."""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders.status import (
    build_condition,
    build_observed_status,
    service_selector,
    status_changed,
)
from blacklist_operator.model.resource import BlacklistService, parse
from blacklist_operator.reconcile.children import running_image
from blacklist_operator.reconcile.readiness import deployment_progress


def make(**spec: Any) -> BlacklistService:
    return parse(
        {
            "metadata": {"name": "demo", "namespace": "team", "uid": "uid-1", "generation": 4},
            "spec": spec,
        }
    )


def deployment(wanted: int, **status: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": wanted},
        "status": {"observedGeneration": 2, **status},
    }


READY = build_condition("Ready", True, "AllReplicasAvailable", "ok", 4, "2026-01-01T00:00:00Z")


def test_the_selector_selects_the_service_pods_only() -> None:
    assert service_selector(make()) == (
        "app.kubernetes.io/name=blacklist-service,"
        "app.kubernetes.io/instance=demo,"
        "app.kubernetes.io/component=service"
    )


def test_replica_counts_come_from_the_deployment_status() -> None:
    progress = deployment_progress(
        deployment(3, replicas=3, readyReplicas=2, availableReplicas=2, updatedReplicas=3)
    )
    assert not progress.available
    assert (progress.replicas, progress.ready_replicas) == (3, 2)
    # A Deployment whose status omits readyReplicas (none ready yet) counts 0.
    assert deployment_progress(deployment(1, replicas=1)).ready_replicas == 0
    assert deployment_progress(None).replicas == 0


def test_observed_status_carries_counts_selector_and_node_port() -> None:
    fields = build_observed_status(make(), READY, 30911, 3, 2)
    assert fields["observedGeneration"] == 4
    assert fields["conditions"] == [READY]
    assert (fields["replicas"], fields["readyReplicas"]) == (3, 2)
    assert fields["selector"] == service_selector(make())
    assert fields["nodePort"] == 30911


def test_no_node_port_is_reported_without_one_and_dropping_it_is_a_change() -> None:
    fields = build_observed_status(make(), READY, None, 1, 1)
    assert "nodePort" not in fields
    current = {**fields, "nodePort": 30911}
    assert status_changed(current, fields)
    assert not status_changed(fields, dict(fields))
    assert status_changed(fields, {**fields, "readyReplicas": 0})


def test_the_running_image_is_read_from_the_service_container() -> None:
    applied = {
        "spec": {"template": {"spec": {"containers": [{"name": "service", "image": "svc:v2"}]}}}
    }
    assert running_image(applied) == "svc:v2"
    assert running_image(None) is None
