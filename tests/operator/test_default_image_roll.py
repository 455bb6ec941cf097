"""New operator default images roll the resources that follow them one at a time; a pin stays.

On the real node: three resources on the operator's default service and database
images, and one that pins both; the operator restarts with other references of
the same images (by digest alone), as an upgrade of the operator brings new
defaults. The test polls the Deployments the whole time.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from blacklist_devtools import images
from blacklist_devtools.kube import Cluster
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
FOLLOWERS = ("roll-a", "roll-b", "roll-c")
PINNED = "pinned"
CLUSTER_IP = {"type": "ClusterIP"}  # no NodePort taken on the shared node


def deployments(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    """Every Deployment of the namespace, by name."""
    listed = get_json(cluster, "deployments", "-n", namespace)
    return {item["metadata"]["name"]: item for item in (listed or {}).get("items", [])}


def image(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def rolled_out(deployment: dict[str, Any]) -> bool:
    """The rollout is complete: its template observed, every replica updated and ready."""
    status = deployment.get("status") or {}
    wanted = deployment["spec"]["replicas"]
    observed = status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
    counts = {status.get(key, 0) for key in ("updatedReplicas", "readyReplicas", "replicas")}
    return bool(observed and counts == {wanted})


def pair(now: dict[str, dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The service and database Deployments of resource ``name``."""
    return now[name], now[f"{name}-postgres"]


def roll_stage(now: dict[str, dict[str, Any]], name: str, new: tuple[str, str]) -> str:
    """``old`` (neither Deployment moved), ``done`` (both moved and rolled out), or ``rolling``."""
    moved = [
        image(deployment) == wanted for deployment, wanted in zip(pair(now, name), new, strict=True)
    ]
    if not any(moved):
        return "old"
    if all(moved) and all(rolled_out(deployment) for deployment in pair(now, name)):
        return "done"
    return "rolling"


def all_ready(cluster: Cluster, namespace: str) -> bool:
    listed = json.loads(cluster.kubectl("get", "bls", "-n", namespace, "-o", "json"))["items"]
    return len(listed) == len(FOLLOWERS) + 1 and all(
        condition(item, "Ready").get("status") == "True" for item in listed
    )


def involved(cluster: Cluster, namespace: str, reason: str) -> set[str]:
    """The names of the objects that Events of ``reason`` are about."""
    listed = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"reason={reason}", "-o", "json"
    )
    return {event["involvedObject"]["name"] for event in json.loads(listed)["items"]}


def test_new_default_images_roll_one_resource_at_a_time(
    crd: Cluster, namespace: str, tmp_path: Path
) -> None:
    old = (images.reference("service"), images.reference("postgres"))
    new = (images.by_digest("service"), images.by_digest("postgres"))
    assert set(old).isdisjoint(new)
    operator = OperatorProcess(crd, tmp_path, "--namespace", namespace).start()
    try:
        # No spec.image, no spec.database.image: the operator's defaults (the old references).
        for name in FOLLOWERS:
            apply_manifest(crd, blacklist_service(name, namespace, local=False, service=CLUSTER_IP))
        pinned_manifest = blacklist_service(
            PINNED, namespace, local=False, service=CLUSTER_IP, image=old[0]
        )
        pinned_manifest["spec"]["database"] = {"image": old[1]}
        apply_manifest(crd, pinned_manifest)
        wait_for(lambda: all_ready(crd, namespace), 120, "every resource Ready", operator)
        before = deployments(crd, namespace)
        for name in (*FOLLOWERS, PINNED):
            assert tuple(image(deployment) for deployment in pair(before, name)) == old
        pinned_before = [
            (image(deployment), deployment["metadata"]["generation"])
            for deployment in pair(before, PINNED)
        ]

        operator.stop()
        # The upgraded operator: the same images under other references are its new defaults.
        operator = OperatorProcess(
            crd,
            tmp_path,
            "--namespace",
            namespace,
            "--default-service-image",
            new[0],
            "--default-database-image",
            new[1],
        ).start()
        started = time.monotonic()
        first_seen: dict[str, float] = {}
        finished: dict[str, float] = {}
        overlaps: list[list[str]] = []
        pinned_seen: set[tuple[tuple[str, int], ...]] = set()
        while time.monotonic() - started < 150:
            now = deployments(crd, namespace)
            moment = time.monotonic() - started
            stages = {name: roll_stage(now, name, new) for name in FOLLOWERS}
            for name, stage in stages.items():
                if stage != "old":
                    first_seen.setdefault(name, moment)
                if stage == "done":
                    finished.setdefault(name, moment)
            mid_roll = [name for name, stage in stages.items() if stage == "rolling"]
            if len(mid_roll) > 1:
                overlaps.append(mid_roll)
            pinned_seen.add(
                tuple(
                    (image(deployment), deployment["metadata"]["generation"])
                    for deployment in pair(now, PINNED)
                )
            )
            if set(stages.values()) == {"done"}:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"not every resource rolled in 150 s: {first_seen}, {finished}")
        assert overlaps == [], f"resources mid-roll at the same moment: {overlaps}"
        wait_for(lambda: all_ready(crd, namespace), 60, "every resource Ready again", operator)
        # Events: each follower said when it rolled; the last one that it waited for its turn.
        wait_for(
            lambda: (
                involved(crd, namespace, "RollingOut") == set(FOLLOWERS)
                and "roll-c" in involved(crd, namespace, "WaitingForRollout")
            ),
            20,
            "the RollingOut and WaitingForRollout Events",
            operator,
        )
    finally:
        operator.stop()

    # In namespace/name order, each after the one before it finished.
    assert sorted(first_seen, key=first_seen.__getitem__) == list(FOLLOWERS)
    for earlier, later in itertools.pairwise(FOLLOWERS):
        assert finished[earlier] <= first_seen[later]
    # The pinned resource's Deployments never changed at all.
    assert pinned_seen == {tuple(pinned_before)}
    for name in FOLLOWERS:
        body = get_json(crd, "bls", name, "-n", namespace)
        assert body is not None
        assert body["status"]["image"] == new[0]
    pinned = get_json(crd, "bls", PINNED, "-n", namespace)
    assert pinned is not None
    assert pinned["status"]["image"] == old[0]
    timings = ", ".join(
        f"{name} {first_seen[name]:.1f}-{finished[name]:.1f} s" for name in FOLLOWERS
    )
    logging.getLogger(__name__).info(f"rolled after the restart: {timings}")
