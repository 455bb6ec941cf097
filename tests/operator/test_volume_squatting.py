"""A tenant cannot squat another tenant's hostPath PersistentVolume through a claim of its own.

PVs are cluster-scoped and their names predictable. A tenant who pre-creates
its claim ``db-postgres`` with ``volumeName`` set to the name another
namespace's resource ``db`` will use must not have the operator create that
volume for the squatter: the victim's resource still becomes Ready on its own PV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blacklist_operator.builders.naming import (
    VOLUME_OWNER_ANNOTATION,
    persistent_volume_name,
)
from blacklist_operator.model.resource import parse
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    wait_for,
)
from tests.operator.test_reconcile import ready

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def volume_name_of(namespace: str, name: str) -> str:
    """The PV name the operator gives resource ``namespace/name``."""
    return persistent_volume_name(parse({"metadata": {"name": name, "namespace": namespace}}))


def squatting_claim(namespace: str, volume_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "db-postgres", "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": volume_name,
            "resources": {"requests": {"storage": "256Mi"}},
        },
    }


def test_a_claim_naming_another_tenants_volume_takes_nothing(
    operator_process: OperatorProcess, namespace: str, other_namespace: str, tmp_path: Path
) -> None:
    cluster = operator_process.cluster
    squatter, victim = namespace, other_namespace
    victims_volume = volume_name_of(victim, "db")
    apply_manifest(cluster, squatting_claim(squatter, victims_volume))
    try:
        storage = {"hostPath": str(tmp_path / "squatter"), "size": "256Mi"}
        apply_manifest(cluster, blacklist_service("db", squatter, database={"storage": storage}))

        def reconciled(namespace: str) -> bool:
            return bool(condition(get_json(cluster, "bls", "db", "-n", namespace), "Ready"))

        wait_for(
            lambda: reconciled(squatter), 60, "the squatter's resource reconciled", operator_process
        )
        volume = get_json(cluster, "pv", victims_volume)
        assert volume is None, f"created for the squatter: {volume['metadata']}"

        storage = {"hostPath": str(tmp_path / "victim"), "size": "256Mi"}
        apply_manifest(cluster, blacklist_service("db", victim, database={"storage": storage}))
        wait_for(
            lambda: ready(cluster, victim, "db"),
            90,
            "the victim's resource Ready",
            operator_process,
        )
        claim = get_json(cluster, "pvc", "db-postgres", "-n", victim)
        assert claim is not None
        assert claim["spec"]["volumeName"] == victims_volume
        volume = get_json(cluster, "pv", victims_volume)
        assert volume is not None
        assert volume["metadata"]["annotations"][VOLUME_OWNER_ANNOTATION] == f"{victim}/db"
        assert volume["spec"]["claimRef"]["namespace"] == victim
        # The squatter's claim stays unbound: its resource is not Ready, the victim's is.
        squatting = get_json(cluster, "pvc", "db-postgres", "-n", squatter)
        assert squatting is not None
        assert squatting["status"].get("phase") != "Bound"
        assert not ready(cluster, squatter, "db")
    finally:
        # While the operator runs: its finalizer releases each hostPath volume.
        for owner in (squatter, victim):
            cluster.kubectl(
                "delete", "bls", "db", "-n", owner, "--ignore-not-found", "--timeout=60s"
            )
