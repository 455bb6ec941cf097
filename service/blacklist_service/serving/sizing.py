"""How many server workers a replica runs: an explicit setting, else its cgroup's limits.

Each worker is a process holding its own copy of Flask and SQLAlchemy (about
69 MB resident under granian, 56 MB under gunicorn), so a count taken from the
node's CPUs gets a pod with a 256 MiB limit OOM-killed in a loop on any node
with 4 CPUs or more. The ban list is not in that count: its snapshot is mapped
once per pod (:mod:`blacklist_service.bans.snapshot`; page cache, 8 to 12
bytes an entry, about 50 MB at 5,000,000 entries, which the kernel can
reclaim under pressure), and a worker's own share is the small ``dict`` of
its log.
The count is therefore derived from what the container may use:

* CPUs: the cgroup's CPU quota (v2 ``cpu.max``; v1 ``cpu.cfs_quota_us`` over
  ``cpu.cfs_period_us``), rounded up; without a quota, the CPUs this process
  may run on (``os.sched_getaffinity``). At least two, because the worker
  that delivers the outbox and follows the ban list also serves, and a second
  one keeps requests off its interpreter lock.
* Memory: the cgroup's limit (v2 ``memory.max``; v1 ``memory.limit_in_bytes``)
  caps it at one worker per ``WORKER_MEMORY`` above ``BASE_MEMORY`` (the
  server's own process), and never below one.

``WEB_CONCURRENCY`` (gunicorn's conventional name; the operator sets it from
``spec.workers``) wins over both. The reading is pure over a cgroup directory,
so it is tested on fake files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from blacklist_service.config import ConfigError, parse_integer

MIB = 1024 * 1024
BASE_MEMORY = 64 * MIB
WORKER_MEMORY = 80 * MIB
MINIMUM_CPU_WORKERS = 2
# cgroup v1 reports "no limit" as the largest page-aligned 64-bit value; anything
# this large is no limit in practice.
UNLIMITED_MEMORY = 1 << 60
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class CgroupLimits:
    """The container's limits: CPUs (quota over period) and memory in bytes; None is unlimited."""

    cpus: float | None
    memory: int | None


@dataclass(frozen=True)
class WorkerPlan:
    """The number of workers and why, for the start-up log."""

    count: int
    reason: str


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _integer(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _cpu_v2(text: str | None) -> float | None:
    parts = (text or "").split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = _integer(parts[0]), _integer(parts[1])
    if quota is None or period is None or quota <= 0 or period <= 0:
        return None
    return quota / period


def _cpu_v1(cgroup_dir: Path) -> float | None:
    for controller in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
        quota = _integer(_read(cgroup_dir / controller / "cpu.cfs_quota_us"))
        period = _integer(_read(cgroup_dir / controller / "cpu.cfs_period_us"))
        if quota is not None and period is not None:
            return quota / period if quota > 0 and period > 0 else None
    return None


def _memory(text: str | None) -> int | None:
    value = _integer(text)  # "max" (v2) is not an integer: no limit
    if value is None or value <= 0 or value >= UNLIMITED_MEMORY:
        return None
    return value


def read_cgroup_limits(cgroup_dir: Path) -> CgroupLimits:
    """The CPU and memory limits of the cgroup at ``cgroup_dir`` (v2, else v1 controllers)."""
    if (cgroup_dir / "cpu.max").exists() or (cgroup_dir / "memory.max").exists():
        return CgroupLimits(
            cpus=_cpu_v2(_read(cgroup_dir / "cpu.max")),
            memory=_memory(_read(cgroup_dir / "memory.max")),
        )
    return CgroupLimits(
        cpus=_cpu_v1(cgroup_dir),
        memory=_memory(_read(cgroup_dir / "memory" / "memory.limit_in_bytes")),
    )


def own_cgroup_dir(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> Path:
    """This process's cgroup v2 directory under ``root``, or ``root`` itself.

    In a container with its own cgroup namespace (and on v1, where the runtime
    mounts the container's own directories) the limits are at the root; a
    process outside a container finds its cgroup by its path in
    ``/proc/self/cgroup``.
    """
    for line in (_read(proc_cgroup) or "").splitlines():
        hierarchy, _, path = line.partition("::")
        if hierarchy == "0" and path.strip("/"):
            candidate = root / path.strip("/")
            if candidate.is_dir():
                return candidate
    return root


def plan_workers(limits: CgroupLimits, available_cpus: int, configured: str | None) -> WorkerPlan:
    """The worker count: ``configured`` (``WEB_CONCURRENCY``) if set, else from ``limits``."""
    if configured is not None and configured.strip():
        count = parse_integer("WEB_CONCURRENCY", configured)
        if count < 1:
            raise ConfigError(f"WEB_CONCURRENCY must be at least 1, not {configured!r}")
        return WorkerPlan(count, f"WEB_CONCURRENCY={count}")
    if limits.cpus is not None:
        by_cpu = max(MINIMUM_CPU_WORKERS, math.ceil(limits.cpus))
        reason = f"CPU limit {limits.cpus:g}"
    else:
        by_cpu = max(MINIMUM_CPU_WORKERS, available_cpus)
        reason = f"no CPU limit, {available_cpus} CPU(s) available"
    if limits.memory is None:
        return WorkerPlan(by_cpu, f"{reason}, no memory limit")
    by_memory = max(1, (limits.memory - BASE_MEMORY) // WORKER_MEMORY)
    memory_text = f"memory limit {limits.memory // MIB} MiB allows {by_memory}"
    return WorkerPlan(min(by_cpu, by_memory), f"{reason}, {memory_text}")


def worker_plan() -> WorkerPlan:
    """The plan for this process: ``WEB_CONCURRENCY``, else its cgroup's limits."""
    limits = read_cgroup_limits(own_cgroup_dir())
    return plan_workers(limits, len(os.sched_getaffinity(0)), os.environ.get("WEB_CONCURRENCY"))
