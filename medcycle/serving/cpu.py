"""How an inference worker shares this machine's CPU: its torch threads and its scheduling priority.

On a CPU-only machine the network is nearly all of a worker's work, and two choices decide how much of the
machine it gets:

* **Threads.** torch starts one intra-op thread per core it sees, in every process. Two workers on a 2-core
  machine then run four spinning threads on two cores, and a worker beside the API spins against it. A worker
  takes ``cpu_threads`` threads; 0 (the default) shares the cores out among this machine's workers:
  ``cores // workers``, at least 1, where the workers are those sharing this machine (a deployment's, counted
  by its supervisor; a worker pod or a worker started by hand counts as one). Cores are the ones this process
  may run on (its affinity, e.g. a cpuset) capped by the smallest cgroup CPU quota from its cgroup up (a
  Kubernetes ``limits.cpu``; v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), which torch itself ignores.
* **Priority.** The API answers in milliseconds (a 429 under overload included) while a worker is
  throughput-bound. A worker lowers its own priority at start: ``worker_priority = "low"`` (the default) is
  ``nice`` 10 (a tenth of the API's share when both want a core); ``"idle"`` puts it in Linux's ``SCHED_IDLE``
  class, which runs only on CPU time no other process wants — the API then never waits for a worker, but a
  worker starved by other busy processes may hold a lock the API needs (the embedded queue's SQLite write
  lock), so it suits a machine where only the API competes; ``"normal"`` leaves it. No privilege is needed to
  lower a priority. Priorities decide only among processes of one cgroup (``medcycle deploy`` on one
  machine); between containers or systemd units their CPU weights decide (``cpu_shares``, ``CPUWeight=``,
  Kubernetes requests), and on a GPU node or a worker pod of its own the class changes nothing.
* **Other thread pools.** numpy's and scipy's BLAS (and any other OpenMP runtime loaded) start one thread per
  core too, and spin after each call; a worker holds them to its torch threads (:func:`limit_native_pools`).
* **Freed memory kept.** glibc's malloc serves every allocation above 32 MiB (and, by a threshold that moves,
  many smaller ones) with a fresh ``mmap`` and gives it back on ``free``, and it trims the heap's free top: a
  network's activations are then new pages on every forward pass, each one page-faulted and zeroed by the
  kernel. On the development VM that was a third more time an image for DenseNet121 in passes of 16
  (134 → 103 ms on one thread) and half the system time of a second worker. A worker keeps what it freed
  (``keep_freed_memory``, on by default: :func:`keep_freed_memory`), so its resident memory stays at the
  largest batch's peak — the memory a worker has to be given anyway.
* **The heap frozen.** A worker holds some 400,000 long-lived objects once a model is loaded (torch, MONAI,
  pydicom, SQLAlchemy, the network's modules), and each batch allocates enough for the cyclic garbage collector to
  run a full collection every few dozen jobs: one walk of all of them, about 0.3 s of CPU on the development VM
  (5–7 ms a job). In a process that applied its share, the worker collects once and freezes what is alive
  (:func:`freeze_heap`) after each model it loads (serving setting ``freeze_heap``), as the API does at start
  (:mod:`medcycle.api.server`). Frozen objects are still freed by reference counting; a reference cycle among
  them would outlive its use, so each freeze first thaws and collects what was frozen before (a model version
  dropped from the cache is freed then). A test process that makes a worker without applying a share never
  freezes.
* **Plain tensors in preprocessing.** MONAI's transforms wrap arrays in ``MetaTensor`` and record each step they
  apply (for inverses), unless told not to track metadata; a serving worker reads none of it (the evaluation
  transform ends in ``EnsureTyped(track_meta=False)`` and serving inverts nothing), so a worker's own process
  turns the tracking off (:func:`plain_tensors`): a 512 × 512 radiograph's scaling and resizing to 224 × 224 went
  from 2.1 to 1.6 ms of CPU, to the same values.
"""

from __future__ import annotations

import gc
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
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_applied = False  # set by apply(): this process is a worker's own (see applied())


@dataclass(frozen=True)
class CpuShare:
    """What :func:`apply` set: torch threads, the scheduling class and niceness, and the cores it saw."""

    threads: int
    priority: str
    nice: int
    cores: int
    keeps_memory: bool = False

    def describe(self) -> str:
        return (f"{self.threads} torch thread(s) of {self.cores} core(s), priority {self.priority} (nice {self.nice})"
                + (", freed memory kept" if self.keeps_memory else ""))


def quota_cores(path: Path) -> float | None:
    """Cores a cgroup v2 ``cpu.max`` file (``QUOTA PERIOD``) allows, or None when unlimited or unreadable."""
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


def _quota_v1(folder: Path) -> float | None:
    """Cores a cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` pair allows (-1: unlimited)."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text(encoding="ascii"))
        period = int((folder / "cpu.cfs_period_us").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_quota(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> float | None:
    """The smallest CPU quota, in cores, on the way from this process's cgroup up to the root (a quota set on
    a parent binds too), or None when there is none. cgroup v2 (``0::PATH`` in /proc/self/cgroup, ``cpu.max``)
    and v1 (the ``cpu`` controller's ``cpu.cfs_quota_us``); in a container whose cgroup namespace makes its own
    cgroup the root, the root's ``cpu.max`` is the container's."""
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    found: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            base, read = root, quota_cores
            folder = root / path.lstrip("/")
        elif "cpu" in controllers.split(","):
            base = root / controllers
            if not base.is_dir():
                base = root / "cpu"
            folder, read = base / path.lstrip("/"), None
        else:
            continue
        while True:
            quota = read(folder / "cpu.max") if read is not None else _quota_v1(folder)
            if quota is not None:
                found.append(quota)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    if not lines:  # not Linux, or /proc not mounted: the root's cpu.max if there is one
        quota = quota_cores(root / "cpu.max")
        if quota is not None:
            found.append(quota)
    return min(found) if found else None


def usable_cores(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota (rounded up), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota(proc_cgroup, root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def threads_for(setting: int, workers: int, cores: int) -> int:
    """torch threads of one worker: ``setting`` when > 0, else ``cores // workers`` (at least 1)."""
    if setting > 0:
        return setting
    return max(1, cores // max(1, workers))


def apply(*, threads: int, workers: int, priority: Priority, keep_memory: bool = True) -> CpuShare:
    """Set this process's torch threads and lower its priority as the settings ask, and with ``keep_memory``
    keep freed memory for reuse (see the module docstring).

    Every thread of the process is set (threads started later inherit it). A priority that cannot be set (not
    Linux, a sandbox refusing ``sched_setscheduler``) is logged, not raised: the worker runs at the one it has.
    """
    import torch

    global _applied
    _applied = True
    cores = usable_cores()
    n = threads_for(threads, workers, cores)
    torch.set_num_threads(n)
    limit_native_pools(n)
    plain_tensors()
    kept = keep_memory and keep_freed_memory()
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
    return CpuShare(threads=n, priority=done, nice=nice, cores=cores, keeps_memory=kept)


def plain_tensors() -> None:
    """MONAI transforms in this process return plain tensors, without metadata (see the module docstring)."""
    from monai.data.meta_obj import set_track_meta

    set_track_meta(False)


#: The variables a BLAS or OpenMP runtime reads when it loads: one loaded after :func:`limit_native_pools` (scipy's
#: own OpenBLAS on its first import) starts with the same number of threads.
POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_native_pools(threads: int) -> None:
    """Hold the native thread pools besides torch's (numpy's and scipy's BLAS, other OpenMP runtimes) to
    ``threads``: those loaded already through threadpoolctl, those loaded later through their environment
    variables. Each starts one thread per core and, after every call it runs on them, keeps them spinning for up
    to a tenth of a second: a dot product in the input statistics of each image kept a second thread busy
    through the whole decoding of a batch — CPU the network of the worker beside it lost."""
    from threadpoolctl import threadpool_limits

    n = max(1, threads)
    for name in POOL_VARIABLES:
        os.environ[name] = str(n)
    threadpool_limits(limits=n)


def applied() -> bool:
    """Whether this process applied a worker's CPU share (:func:`apply`): it is a worker's own process, whose
    heap the worker may freeze (a test process that only makes a worker is not)."""
    return _applied


def freeze_heap() -> int:
    """Thaw what an earlier call froze, collect once and freeze every object alive (see the module docstring);
    returns how many are frozen."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
NEVER_TRIM = 2**31 - 1  # mallopt takes an int: the largest, 2 GiB of free heap top before it is trimmed


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in this process for the next allocation: no ``mmap`` per large
    allocation, no trimming of the heap's top (see the module docstring). Returns whether it was set (False on
    another C library, where nothing changes)."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


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
