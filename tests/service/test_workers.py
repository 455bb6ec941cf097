"""Worker sizing from the container's cgroup limits, read from fake cgroup files."""

from __future__ import annotations

from pathlib import Path

import pytest

from blacklist_service.config import ConfigError
from blacklist_service.serving.sizing import (
    CgroupLimits,
    own_cgroup_dir,
    plan_workers,
    read_cgroup_limits,
)

MIB = 1024 * 1024


def cgroup_v2(directory: Path, cpu_max: str, memory_max: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cgroup.controllers").write_text("cpu memory pids\n")
    (directory / "cpu.max").write_text(f"{cpu_max}\n")
    (directory / "memory.max").write_text(f"{memory_max}\n")
    return directory


def cgroup_v1(directory: Path, quota: int, period: int, memory: int) -> Path:
    (directory / "cpu,cpuacct").mkdir(parents=True)
    (directory / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (directory / "cpu,cpuacct" / "cpu.cfs_period_us").write_text(f"{period}\n")
    (directory / "memory").mkdir()
    (directory / "memory" / "memory.limit_in_bytes").write_text(f"{memory}\n")
    return directory


@pytest.mark.parametrize(
    ("cpu_max", "memory_max", "expected"),
    [
        ("max 100000", "max", CgroupLimits(cpus=None, memory=None)),
        ("150000 100000", "max", CgroupLimits(cpus=1.5, memory=None)),
        ("max 100000", str(256 * MIB), CgroupLimits(cpus=None, memory=256 * MIB)),
        ("50000 100000", str(64 * MIB), CgroupLimits(cpus=0.5, memory=64 * MIB)),
    ],
)
def test_cgroup_v2_limits(
    tmp_path: Path, cpu_max: str, memory_max: str, expected: CgroupLimits
) -> None:
    assert read_cgroup_limits(cgroup_v2(tmp_path, cpu_max, memory_max)) == expected


def test_cgroup_v1_limits(tmp_path: Path) -> None:
    limited = cgroup_v1(tmp_path / "limited", 250000, 100000, 512 * MIB)
    assert read_cgroup_limits(limited) == CgroupLimits(cpus=2.5, memory=512 * MIB)
    # v1 says "no limit" with a quota of -1 and a page-rounded maximum memory.
    unlimited = cgroup_v1(tmp_path / "unlimited", -1, 100000, 9223372036854771712)
    assert read_cgroup_limits(unlimited) == CgroupLimits(cpus=None, memory=None)


def test_no_cgroup_files_means_no_limits(tmp_path: Path) -> None:
    assert read_cgroup_limits(tmp_path) == CgroupLimits(cpus=None, memory=None)
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert read_cgroup_limits(tmp_path) == CgroupLimits(cpus=None, memory=None)


@pytest.mark.parametrize(
    ("limits", "available", "expected"),
    [
        (CgroupLimits(cpus=None, memory=None), 8, 8),  # no limit: the CPUs we may run on
        (CgroupLimits(cpus=None, memory=None), 1, 2),  # at least two when memory allows
        (CgroupLimits(cpus=1.5, memory=None), 64, 2),  # the quota, rounded up
        (CgroupLimits(cpus=4.0, memory=None), 64, 4),
        (CgroupLimits(cpus=None, memory=256 * MIB), 16, 2),  # 64 MiB base + 2 x 80 MiB
        (CgroupLimits(cpus=8.0, memory=512 * MIB), 64, 5),
        (CgroupLimits(cpus=4.0, memory=100 * MIB), 64, 1),  # a tiny limit: still one
        (CgroupLimits(cpus=0.5, memory=16 * MIB), 1, 1),
    ],
)
def test_worker_count_from_limits(limits: CgroupLimits, available: int, expected: int) -> None:
    plan = plan_workers(limits, available, configured=None)
    assert plan.count == expected
    assert plan.reason


def test_an_explicit_setting_wins(tmp_path: Path) -> None:
    plan = plan_workers(CgroupLimits(cpus=1.0, memory=128 * MIB), 64, configured="5")
    assert plan.count == 5
    assert "WEB_CONCURRENCY" in plan.reason
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY"):
        plan_workers(CgroupLimits(cpus=None, memory=None), 4, configured="many")
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY"):
        plan_workers(CgroupLimits(cpus=None, memory=None), 4, configured="0")
    assert plan_workers(CgroupLimits(cpus=None, memory=None), 4, configured=" ").count == 4


def test_own_cgroup_dir_follows_proc_self_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "sys-fs-cgroup"
    nested = root / "kubepods" / "pod1" / "container"
    nested.mkdir(parents=True)
    proc = tmp_path / "cgroup"
    proc.write_text("0::/kubepods/pod1/container\n")
    assert own_cgroup_dir(root, proc) == nested
    # Inside a cgroup namespace the path is "/"; a path that is not mounted falls back to the root.
    proc.write_text("0::/\n")
    assert own_cgroup_dir(root, proc) == root
    proc.write_text("0::/elsewhere\n")
    assert own_cgroup_dir(root, proc) == root
    assert own_cgroup_dir(root, tmp_path / "missing") == root
