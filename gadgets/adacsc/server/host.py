"""What the host actually gives the server, logged at start: a scanner's reconstruction host (or any
container runtime) limits CPUs and memory through the CPU affinity and cgroups, which
os.cpu_count() does not show.

cgroup v2: cpu.max ("QUOTA PERIOD" or "max PERIOD") and memory.max ("max" or bytes) in the
unified hierarchy; cgroup v1: cpu/cpu.cfs_quota_us and cpu.cfs_period_us (-1: none) and
memory/memory.limit_in_bytes (a huge number: none).
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
_V1_NO_LIMIT = 1 << 60


@dataclass(frozen=True)
class HostResources:
    """CPUs and memory the process may use (None: no limit found)."""

    cpu_count: int
    usable_cpus: int
    """CPUs in the process's affinity mask"""
    cgroup_version: int | None
    cpu_quota: float | None
    """CPUs' worth of time per period allowed by the cgroup"""
    memory_limit_bytes: int | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_limits(root: Path = CGROUP_ROOT) -> tuple[int | None, float | None, int | None]:
    """(cgroup version, CPU quota in CPUs, memory limit in bytes) under `root`; None where absent."""
    cpu_max = _read(root / "cpu.max")
    if cpu_max is not None or (root / "cgroup.controllers").exists():
        quota = None
        if cpu_max:
            limit, _, period = cpu_max.partition(" ")
            if limit != "max" and period:
                quota = int(limit) / int(period)
        memory = _read(root / "memory.max")
        return 2, quota, int(memory) if memory and memory != "max" else None
    cfs_quota, cfs_period = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
    memory = _read(root / "memory" / "memory.limit_in_bytes")
    if cfs_quota is None and memory is None:
        return None, None, None
    quota = int(cfs_quota) / int(cfs_period) if cfs_quota and cfs_period and int(cfs_quota) > 0 else None
    limit = int(memory) if memory and int(memory) < _V1_NO_LIMIT else None
    return 1, quota, limit


def host_resources(root: Path = CGROUP_ROOT) -> HostResources:
    """The CPUs and memory this process may use."""
    count = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else count
    version, quota, memory = cgroup_limits(root)
    return HostResources(count, usable, version, quota, memory)


def log_host_resources(root: Path = CGROUP_ROOT) -> HostResources:
    """Log (and return) what the host gives this process."""
    found = host_resources(root)
    quota = f"{found.cpu_quota:g} CPUs" if found.cpu_quota is not None else "no CPU quota"
    memory = (f"{found.memory_limit_bytes / (1 << 20):.0f} MiB memory" if found.memory_limit_bytes is not None
              else "no memory limit")
    cgroup = f"cgroup v{found.cgroup_version}" if found.cgroup_version else "no cgroup limits readable"
    log.info("host: %d CPUs, %d usable (affinity); %s: %s, %s", found.cpu_count, found.usable_cpus, cgroup, quota,
             memory)
    return found
