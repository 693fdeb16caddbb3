"""How an inference worker shares this machine's CPU: its torch threads and its scheduling priority.

On a CPU-only machine the network is nearly all of a worker's work, and two choices decide how much of the
machine it gets:

* **Threads.** torch starts one intra-op thread per core it sees, in every process. Two workers on a 2-core
  machine then run four spinning threads on two cores, and a worker beside the API spins against it. A worker
  takes ``cpu_threads`` threads; 0 (the default) shares the cores out among this machine's workers:
  ``cores // workers``, at least 1. Cores are the ones this process may run on (its affinity, e.g. a cpuset)
  capped by a cgroup CPU quota where one is set (a Kubernetes ``limits.cpu``), which torch itself ignores.
* **Priority.** The API answers in milliseconds (a 429 under overload included) while a worker is
  throughput-bound. A worker lowers its own priority at start: ``worker_priority = "idle"`` (the default)
  puts it in Linux's ``SCHED_IDLE`` class, which runs only on CPU time no other process wants, so the API is
  never kept waiting by a worker; ``"low"`` is ``nice`` 10 (a tenth of the API's share when both want a
  core); ``"normal"`` leaves it. No privilege is needed to lower a priority. On a machine where nothing else
  runs (a GPU node, a worker pod) the classes make no difference.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Priority = Literal["normal", "low", "idle"]
LOW_NICE = 10
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


@dataclass(frozen=True)
class CpuShare:
    """What :func:`apply` set: torch threads, the scheduling class and niceness, and the cores it saw."""

    threads: int
    priority: str
    nice: int
    cores: int

    def describe(self) -> str:
        return f"{self.threads} torch thread(s) of {self.cores} core(s), priority {self.priority} (nice {self.nice})"


def quota_cores(path: Path = CGROUP_CPU_MAX) -> float | None:
    """Cores a cgroup v2 CPU quota allows (``cpu.max``: ``QUOTA PERIOD``), or None when unlimited or unknown."""
    try:
        fields = path.read_text(encoding="ascii").split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cores(quota_file: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup quota (rounded up), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = quota_cores(quota_file)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def threads_for(setting: int, workers: int, cores: int) -> int:
    """torch threads of one worker: ``setting`` when > 0, else ``cores // workers`` (at least 1)."""
    if setting > 0:
        return setting
    return max(1, cores // max(1, workers))


def apply(*, threads: int, workers: int, priority: Priority) -> CpuShare:
    """Set this process's torch threads and lower its priority as the settings ask (see the module docstring).

    Every thread of the process is set (threads started later inherit it). A priority that cannot be set (not
    Linux, a sandbox refusing ``sched_setscheduler``) is logged, not raised: the worker runs at the one it has.
    """
    import torch

    cores = usable_cores()
    n = threads_for(threads, workers, cores)
    torch.set_num_threads(n)
    done: str = priority
    if priority == "idle":
        try:
            _each_thread(lambda tid: os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0)))
        except (AttributeError, OSError) as exc:
            log.warning("SCHED_IDLE not available (%s); lowering the priority with nice instead", exc)
            done = "low"
    if done == "low":
        try:
            _each_thread(lambda tid: os.setpriority(os.PRIO_PROCESS, tid, max(LOW_NICE, os.getpriority(
                os.PRIO_PROCESS, tid))))
        except (AttributeError, OSError) as exc:
            log.warning("the worker's priority could not be lowered: %s", exc)
            done = "normal"
    try:
        nice = os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        nice = 0
    return CpuShare(threads=n, priority=done, nice=nice, cores=cores)


def _each_thread(change: Callable[[int], object]) -> None:
    """``change`` each thread of this process (by id; 0 where threads cannot be listed): on Linux a priority
    belongs to a thread, and a thread started later inherits its creator's, so those already running (a
    database pool's, a metrics server's) are set one by one. A thread that ended meanwhile is skipped."""
    try:
        tids = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            change(tid)
        except ProcessLookupError:
            continue
