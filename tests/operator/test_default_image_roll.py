"""A new operator default image rolls the resources that follow it one at a time; a pin stays.

On the real node: three resources on the operator's default service image and one
pinned to it; the operator restarts with another reference of the same image
(by digest alone), as an upgrade of the operator brings a new default. The test
polls the Deployments the whole time.
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


def deployments(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    """The service Deployments of the namespace, by name."""
    listed = get_json(
        cluster, "deployments", "-n", namespace, "-l", "app.kubernetes.io/component=service"
    )
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


def test_a_new_default_image_rolls_one_resource_at_a_time(
    crd: Cluster, namespace: str, tmp_path: Path
) -> None:
    old, new = images.reference("service"), images.by_digest("service")
    assert old != new
    operator = OperatorProcess(crd, tmp_path, "--namespace", namespace).start()
    try:
        # ClusterIP: no NodePort taken on the shared node. No spec.image: the operator's default.
        for name in FOLLOWERS:
            manifest = blacklist_service(
                name, namespace, local=False, service={"type": "ClusterIP"}
            )
            apply_manifest(crd, manifest)
        apply_manifest(
            crd,
            blacklist_service(
                PINNED, namespace, local=False, image=old, service={"type": "ClusterIP"}
            ),
        )
        wait_for(lambda: all_ready(crd, namespace), 120, "every resource Ready", operator)
        before = deployments(crd, namespace)
        assert {name: image(item) for name, item in before.items()} == dict.fromkeys(
            (*FOLLOWERS, PINNED), old
        )
        pinned_generation = before[PINNED]["metadata"]["generation"]

        operator.stop()
        # The upgraded operator: the same image under another reference is its new default.
        operator = OperatorProcess(
            crd, tmp_path, "--namespace", namespace, "--default-service-image", new
        ).start()
        started = time.monotonic()
        first_seen: dict[str, float] = {}
        finished: dict[str, float] = {}
        most_at_once = 0
        overlaps: list[list[str]] = []
        pinned_images: set[str] = set()
        pinned_generations: set[int] = set()
        while time.monotonic() - started < 150:
            now = deployments(crd, namespace)
            moment = time.monotonic() - started
            mid_roll = []
            for name in FOLLOWERS:
                if image(now[name]) != new:
                    continue
                first_seen.setdefault(name, moment)
                if rolled_out(now[name]):
                    finished.setdefault(name, moment)
                else:
                    mid_roll.append(name)
            if len(mid_roll) > 1:
                overlaps.append(mid_roll)
            most_at_once = max(most_at_once, len(mid_roll))
            pinned_images.add(image(now[PINNED]))
            pinned_generations.add(now[PINNED]["metadata"]["generation"])
            if len(finished) == len(FOLLOWERS) and not mid_roll:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"not every resource rolled in 150 s: {first_seen}, {finished}")
        assert overlaps == [], f"resources mid-roll at the same moment: {overlaps}"
        assert most_at_once == 1
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
    assert pinned_images == {old}
    assert pinned_generations == {pinned_generation}
    for name in FOLLOWERS:
        body = get_json(crd, "bls", name, "-n", namespace)
        assert body is not None
        assert body["status"]["image"] == new
    pinned = get_json(crd, "bls", PINNED, "-n", namespace)
    assert pinned is not None
    assert pinned["status"]["image"] == old
    timings = ", ".join(
        f"{name} {first_seen[name]:.1f}-{finished[name]:.1f} s" for name in FOLLOWERS
    )
    logging.getLogger(__name__).info(f"rolled after the restart: {timings}")
