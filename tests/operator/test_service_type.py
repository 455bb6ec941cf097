"""spec.service.type switched in place: the Service follows, and status.nodePort with it."""

from __future__ import annotations

import zlib
from typing import Any

import pytest

from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    install_crd,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def settled(operator: OperatorProcess, namespace: str) -> dict[str, Any] | None:
    """The resource once Ready for its latest generation, else None."""
    body = get_json(operator.cluster, "bls", "exposed", "-n", namespace)
    if body is None or condition(body, "Ready").get("status") != "True":
        return None
    status = body.get("status") or {}
    return body if status.get("observedGeneration") == body["metadata"]["generation"] else None


def service_of(operator: OperatorProcess, namespace: str) -> dict[str, Any]:
    service = get_json(operator.cluster, "service", "exposed", "-n", namespace)
    assert service is not None
    return service


def switch(operator: OperatorProcess, namespace: str, **spec: Any) -> dict[str, Any]:
    """Apply ``spec`` and wait until the resource is Ready for it; return the resource."""
    # The CRD is cluster-wide, and other sessions sharing the cluster apply their own copy:
    # apply this tree's (with spec.service) again right before each switch.
    install_crd(operator.cluster)
    apply_manifest(operator.cluster, blacklist_service("exposed", namespace, **spec))
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        body = settled(operator, namespace)
        wanted = (spec.get("service") or {}).get("type", "NodePort")
        if body is None or service_of(operator, namespace)["spec"]["type"] != wanted:
            return False
        found[:] = [body]
        return True

    wait_for(ready, 90, f"Ready with a {spec.get('service')} Service", operator)
    return found[0]


def test_switching_the_service_type_in_place(
    operator_process: OperatorProcess, namespace: str
) -> None:
    pinned = 30000 + zlib.crc32(namespace.encode()) % 2700
    body = switch(operator_process, namespace, nodePort=pinned)
    service = service_of(operator_process, namespace)
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["ports"][0]["nodePort"] == pinned
    assert body["status"]["nodePort"] == pinned

    # To ClusterIP: the pinned NodePort and the traffic policy go, and so does status.nodePort.
    body = switch(operator_process, namespace, service={"type": "ClusterIP"})
    service = service_of(operator_process, namespace)
    assert "externalTrafficPolicy" not in service["spec"]
    assert [port.get("nodePort") for port in service["spec"]["ports"]] == [None]
    assert "nodePort" not in body["status"]

    # To LoadBalancer: Kubernetes allocates a NodePort, reported again; the policy is back.
    body = switch(operator_process, namespace, service={"type": "LoadBalancer"})
    service = service_of(operator_process, namespace)
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    allocated = service["spec"]["ports"][0]["nodePort"]
    assert 30000 <= allocated <= 32767
    assert body["status"]["nodePort"] == allocated

    # Back to ClusterIP, then NodePort: an allocated NodePort goes and comes as well.
    switch(operator_process, namespace, service={"type": "ClusterIP"})
    assert [
        p.get("nodePort") for p in service_of(operator_process, namespace)["spec"]["ports"]
    ] == [None]
    body = switch(operator_process, namespace, service={"type": "NodePort"})
    service = service_of(operator_process, namespace)
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert body["status"]["nodePort"] == service["spec"]["ports"][0]["nodePort"]
