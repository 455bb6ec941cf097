"""The `cluster-up` / `cluster-down` contract, on a second, private control plane.

A second cluster in a temporary directory (its own ports, state and
kubeconfig; without a node, since the machine has one and the session's
cluster owns it) shows that `up` is idempotent and that `down` stops exactly
the processes `up` started, without touching the session's cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blacklist_devtools.cluster import REPO_ROOT
from blacklist_devtools.kube import Cluster
from blacklist_devtools.processes import ProcessRecord

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def run_cluster(local_dir: Path, command: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BLACKLIST_LOCAL_DIR": str(local_dir),
        "BLACKLIST_BIN_DIR": str(REPO_ROOT / ".local" / "bin"),
        "BLACKLIST_NODE": "none",
    }
    return subprocess.run(
        [sys.executable, "-m", "blacklist_devtools.cluster", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_up_is_idempotent_and_down_stops_exactly_what_up_started(
    cluster: Cluster, tmp_path: Path
) -> None:
    session_pids = {record.pid for record in _records(REPO_ROOT / ".local")}
    first = run_cluster(tmp_path, "up")
    assert first.returncode == 0, first.stderr
    assert "cluster ready" in first.stderr
    assert (tmp_path / "kubeconfig").exists()
    started = _records(tmp_path)
    assert {record.name for record in started} >= {
        "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
    }  # fmt: skip
    assert not session_pids & {record.pid for record in started}

    second = run_cluster(tmp_path, "up")
    assert second.returncode == 0, second.stderr
    assert "reusing the running cluster" in second.stderr
    assert [r.pid for r in _records(tmp_path)] == [r.pid for r in started]

    down = run_cluster(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert not any(record.alive() for record in started)
    assert not (tmp_path / "cluster").exists()
    assert not (tmp_path / "kubeconfig").exists()
    # The session's cluster is untouched.
    assert all(record.alive() for record in _records(REPO_ROOT / ".local"))
    assert cluster.kubectl("get", "--raw", "/readyz") == "ok"


def _records(local_dir: Path) -> list[ProcessRecord]:
    state_file = local_dir / "cluster" / "state.json"
    raw = json.loads(state_file.read_text())
    return [ProcessRecord(**record) for record in raw["processes"]]
