"""A hostPath volume made before the operator chose directories keeps working, and is pointed out.

The earlier operator put a resource's PersistentVolume on the path its spec
named. A PV's source cannot change, so the resource keeps that volume (its
claim binds, the apply of the PV does not fail), and every full reconcile posts
a Warning Event ``LegacyHostPath`` naming the path, for the admin to migrate.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from blacklist_operator.builders import build_persistent_volume
from blacklist_operator.model.resource import parse
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    get_json,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_a_volume_on_the_path_the_spec_named_is_kept_and_reported(
    operator_process: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    cluster = operator_process.cluster
    legacy = str(tmp_path / "legacy")
    manifest = blacklist_service("old", namespace, database={"storage": {"hostPath": legacy}})
    # What the earlier operator applied for this resource.
    volume = build_persistent_volume(parse(manifest))
    assert volume is not None
    assert volume["spec"]["hostPath"]["path"] == legacy
    apply_manifest(cluster, volume)
    name = volume["metadata"]["name"]
    try:
        apply_manifest(cluster, manifest)

        def bound() -> bool:
            claim = get_json(cluster, "pvc", "old-postgres", "-n", namespace) or {}
            return (claim.get("status") or {}).get("phase") == "Bound"

        wait_for(bound, 60, "the claim bound to the legacy volume", operator_process)
        kept = get_json(cluster, "pv", name)
        assert kept is not None
        assert kept["spec"]["hostPath"]["path"] == legacy

        def reported() -> bool:
            events = cluster.kubectl(
                "get", "events", "-n", namespace,
                "--field-selector", "reason=LegacyHostPath", "-o", "jsonpath={.items[*].message}",
            )  # fmt: skip
            return legacy in events

        wait_for(reported, 60, "a LegacyHostPath Event naming the path", operator_process)
    finally:
        cluster.kubectl(
            "delete", "bls", "old", "-n", namespace, "--ignore-not-found", "--timeout=60s"
        )
        cluster.kubectl("delete", "pv", name, "--ignore-not-found", "--wait=false")
