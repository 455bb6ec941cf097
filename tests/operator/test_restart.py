"""SIGKILL mid-reconcile, restart: the operator converges and creates no duplicates."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from blacklist_devtools.kube import Cluster
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
INSTANCES = 6


def all_ready(operator: OperatorProcess, namespace: str) -> bool:
    listed = json.loads(operator.cluster.kubectl("get", "bls", "-n", namespace, "-o", "json"))
    items = listed["items"]
    return len(items) == INSTANCES and all(
        condition(item, "Ready").get("status") == "True" for item in items
    )


def names(operator: OperatorProcess, namespace: str, kinds: str) -> list[str]:
    output = operator.cluster.kubectl("get", kinds, "-n", namespace, "-o", "name")
    return sorted(line for line in output.splitlines() if "kube-root-ca" not in line)


def test_sigkill_mid_reconcile_then_restart_converges(
    crd: Cluster, namespace: str, tmp_path: Path
) -> None:
    operator = OperatorProcess(crd, tmp_path, "--namespace", namespace)
    operator.start()
    try:
        for index in range(INSTANCES):
            apply_manifest(operator.cluster, blacklist_service(f"svc{index}", namespace))
        time.sleep(0.4)
        operator.kill()
        operator.start()
        wait_for(lambda: all_ready(operator, namespace), 60, "every instance Ready", operator)
        secrets = operator.cluster.kubectl("get", "secrets", "-n", namespace, "-o", "json")
        passwords = {
            item["metadata"]["name"]: item["data"]["password"]
            for item in json.loads(secrets)["items"]
        }
        operator.kill()
        operator.start()
        wait_for(
            lambda: all_ready(operator, namespace), 60, "Ready after a second restart", operator
        )
    finally:
        operator.stop()

    expected = sorted(
        f"{kind}/svc{index}{suffix}"
        for index in range(INSTANCES)
        for kind, suffix in (("deployment.apps", ""), ("deployment.apps", "-postgres"))
    )
    assert names(operator, namespace, "deployments") == expected
    assert len(names(operator, namespace, "replicasets")) == 2 * INSTANCES
    assert len(names(operator, namespace, "services")) == 2 * INSTANCES
    assert len(names(operator, namespace, "pvc")) == INSTANCES
    assert len(names(operator, namespace, "configmaps")) == 2 * INSTANCES
    after = json.loads(operator.cluster.kubectl("get", "secrets", "-n", namespace, "-o", "json"))
    assert {i["metadata"]["name"]: i["data"]["password"] for i in after["items"]} == passwords
