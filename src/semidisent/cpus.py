"""How many CPUs this process may use: the cores it may run on, capped by its cgroup's quota.

In a Kubernetes pod ``os.cpu_count()`` and even the affinity mask report the node's cores (64 on
a big node), while the pod's CPU limit is a CFS quota (``cpu.max`` in cgroup v2,
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in v1). Sizing thread pools by the node overbooks
the quota and the kernel throttles the whole pod.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 4.0), None when unlimited/unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # v2: "400000 100000"
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:  # v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus(root: Path = CGROUP) -> int:
    """Cores this process may run on, capped by the cgroup quota (rounded up, at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)
