"""An operator confined to some namespaces leaves resources in the others alone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from blacklist_devtools.kube import Cluster, wait_until
from tests.operator.helpers import OperatorProcess, apply_manifest, blacklist_service, get_json

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_a_resource_outside_the_watched_namespaces_is_left_alone(
    crd: Cluster, namespace: str, other_namespace: str, tmp_path: Path
) -> None:
    operator = OperatorProcess(crd, tmp_path, "--namespace", namespace).start()
    try:
        apply_manifest(crd, blacklist_service("watched", namespace))
        apply_manifest(crd, blacklist_service("ignored", other_namespace))

        def watched_children() -> bool:
            return get_json(crd, "deployment", "watched", "-n", namespace) is not None

        assert wait_until(watched_children, timeout=60)
        time.sleep(3)  # ample time for a wrongly watching operator to act as well
        assert get_json(crd, "deployment", "ignored", "-n", other_namespace) is None
        ignored = get_json(crd, "blacklistservice", "ignored", "-n", other_namespace)
        assert ignored is not None
        assert "status" not in ignored or not ignored["status"]
        assert not ignored["metadata"].get("finalizers")
        assert not any(
            key.startswith("blacklist.dev/") for key in ignored["metadata"].get("annotations", {})
        )
    finally:
        operator.stop()
