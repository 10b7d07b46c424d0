"""How many CPU threads torch should use on this machine, and using that many for a while.

torch's default is one thread per core it sees, which on a machine shared with other jobs (or in a
container whose CPU quota is below the core count) oversubscribes the CPUs, and torch's threads then
wait on each other: a small training run measured 68 s with 2 threads on 2 cores, one of them busy
with another job, against 1 s with one thread.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch

__all__ = ["available_cpus", "default_threads", "torch_threads"]


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), None if unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, lowered to the cgroup's CPU quota if there is one."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(1, min(n, math.ceil(quota)) if quota else n)


def default_threads(world: int = 1, cap: int = 8) -> int:
    """Threads per process for ``world`` processes: $OMP_NUM_THREADS if set (torch honours it too);
    else the :func:`available_cpus` that other processes do not keep busy (the 1-minute load
    average), shared among the processes, between 1 and ``cap`` (small convolutions gain little
    beyond 8 threads)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):             # no load average on this platform
        busy = 0
    free = max(1, available_cpus() - busy)
    return max(1, min(cap, free // max(1, world)))


@contextlib.contextmanager
def torch_threads(n: int):
    """torch uses ``n`` CPU threads inside the block, its former number after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield int(n)
    finally:
        torch.set_num_threads(before)
