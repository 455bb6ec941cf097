"""Children are never adopted by force: an object of the same name that we did not create stays.

Someone else's Service ``demo`` is in the namespace when BlacklistService
``demo`` is created: it is left untouched (no owner reference, no labels, no
field changed, so the garbage collector will never delete it with the
resource); Ready is False with reason ChildConflict and a message naming it,
and a Warning Event says the same. Once the object is gone the operator
creates its own within the conflict retry.
"""

from __future__ import annotations

from typing import Any

import pytest

from blacklist_operator.reconcile.children import CONFLICT_RETRY_SECONDS
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def foreign_service(namespace: str) -> dict[str, Any]:
    """A Service ``demo`` of another team, made with nothing of ours."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "demo", "namespace": namespace, "labels": {"team": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080, "targetPort": 8080}]},
    }


def test_someone_elses_service_is_left_untouched_and_reported(
    operator_process: OperatorProcess, namespace: str
) -> None:
    cluster = operator_process.cluster
    apply_manifest(cluster, foreign_service(namespace))
    before = get_json(cluster, "service", "demo", "-n", namespace)
    assert before is not None

    apply_manifest(cluster, blacklist_service("demo", namespace))

    def ready_reason() -> str | None:
        return condition(get_json(cluster, "bls", "demo", "-n", namespace), "Ready").get("reason")

    wait_for(lambda: ready_reason() == "ChildConflict", 60, "Ready ChildConflict", operator_process)
    ready = condition(get_json(cluster, "bls", "demo", "-n", namespace), "Ready")
    assert ready["status"] == "False"
    assert "Service demo exists and was not created by this BlacklistService" in ready["message"]
    # The other children are there; the Service is exactly as its owner left it.
    wait_for(
        lambda: get_json(cluster, "deployment", "demo", "-n", namespace) is not None,
        30,
        "Deployment demo",
        operator_process,
    )
    after = get_json(cluster, "service", "demo", "-n", namespace)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "ownerReferences" not in after["metadata"]
    assert after["metadata"]["labels"] == {"team": "web"}
    assert after["spec"]["type"] == "ClusterIP"
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=ChildConflict", "-o", "name"
    )
    assert events.strip(), "no ChildConflict Event"

    # A status refresh (a Deployment becoming available) does not hide the conflict.
    wait_for(
        lambda: (
            (get_json(cluster, "deployment", "demo", "-n", namespace) or {})
            .get("status", {})
            .get("availableReplicas")
        ),
        90,
        "Deployment demo available",
        operator_process,
    )
    assert ready_reason() == "ChildConflict"

    # Its owner removes it: the operator's own Service follows within the retry.
    cluster.kubectl("delete", "service", "demo", "-n", namespace)

    def ours() -> bool:
        service = get_json(cluster, "service", "demo", "-n", namespace) or {}
        references = service.get("metadata", {}).get("ownerReferences") or []
        return any(reference.get("kind") == "BlacklistService" for reference in references)

    wait_for(ours, CONFLICT_RETRY_SECONDS + 30, "the operator's own Service demo", operator_process)
    wait_for(
        lambda: ready_reason() != "ChildConflict", 30, "ChildConflict cleared", operator_process
    )
