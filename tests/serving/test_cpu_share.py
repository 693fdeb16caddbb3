"""``medcycle.serving.cpu``: a worker's torch threads and CPU priority (set in a child process: a priority
lowered in the test process could not be raised again, and would slow the rest of the suite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from medcycle.serving import cpu

PROBE = """
import json, os, sys, threading, numpy, scipy.linalg, torch, threadpoolctl
started = threading.Event(); release = threading.Event()
def park():
    started.set(); release.wait()
early = threading.Thread(target=park); early.start(); started.wait()  # a thread that exists before apply
from medcycle.serving import cpu
share = cpu.apply(threads=int(sys.argv[1]), workers=int(sys.argv[2]), priority=sys.argv[3])
late = {}
def look():
    late["policy"] = os.sched_getscheduler(0); late["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
t = threading.Thread(target=look); t.start(); t.join()
import monai.data
print(json.dumps({"track_meta": monai.data.get_track_meta(), "threads": share.threads, "priority": share.priority,
                  "nice": share.nice, "cores": share.cores,
                  "torch": torch.get_num_threads(), "main_policy": os.sched_getscheduler(0),
                  "early_policy": os.sched_getscheduler(early.native_id),
                  "early_nice": os.getpriority(os.PRIO_PROCESS, early.native_id),
                  "late_policy": late["policy"], "late_nice": late["nice"], "idle": os.SCHED_IDLE,
                  "other": os.SCHED_OTHER,
                  "pools": max(p["num_threads"] for p in threadpoolctl.threadpool_info())}))
release.set(); early.join()
"""

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are Linux's")


def _probe(threads: int, workers: int, priority: str) -> dict[str, int | str]:
    done = subprocess.run([sys.executable, "-c", PROBE, str(threads), str(workers), priority], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                          check=True)
    result: dict[str, int | str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@linux_only
def test_idle_priority_reaches_every_thread_and_threads_are_shared_out() -> None:
    out = _probe(0, 2, "idle")
    if out["priority"] != "idle":  # a sandbox refusing SCHED_IDLE: the worker fell back to nice 10
        pytest.skip(f"SCHED_IDLE refused here (fell back to {out['priority']})")
    assert out["main_policy"] == out["early_policy"] == out["late_policy"] == out["idle"]
    assert out["threads"] == out["torch"] == max(1, int(out["cores"]) // 2)


@linux_only
def test_low_priority_is_nice_10_on_every_thread_and_explicit_threads_win() -> None:
    nice = max(cpu.LOW_NICE, os.getpriority(os.PRIO_PROCESS, 0))  # never raised: a nicer runner stays as nice
    out = _probe(3, 2, "low")
    assert out["priority"] == "low" and out["nice"] == nice
    assert out["early_nice"] == out["late_nice"] == nice
    assert out["main_policy"] == out["early_policy"] == os.sched_getscheduler(0)  # the class is left as it was
    assert out["threads"] == out["torch"] == 3


@linux_only
def test_normal_priority_changes_nothing() -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)
    out = _probe(1, 1, "normal")
    assert out["priority"] == "normal" and out["nice"] == before
    assert out["main_policy"] == os.sched_getscheduler(0)
    assert out["torch"] == 1
    assert out["track_meta"] is False  # a worker's own process: MONAI transforms give plain tensors


def test_preprocessing_without_metadata_gives_the_same_tensors() -> None:
    """What :func:`cpu.plain_tensors` turns off changes no value the network sees (the evaluation transforms of a
    classification and a segmentation config: percentile scaling, resizing (of the mask too), tensors out)."""
    import numpy as np
    import torch
    from monai.data import get_track_meta, set_track_meta

    from medcycle.serving.preprocess import EvalTransform
    from medcycle.training.config import example, validate

    for task in ("classification-2d", "segmentation-2d"):
        data = example(task)
        data["input"] = {**data["input"], "size": [96, 80]}
        transform = EvalTransform(validate(data), 2)
        image = np.random.default_rng(3).normal(1000.0, 250.0, (300, 257)).astype(np.float32)
        assert get_track_meta()
        with_meta = transform(image)
        try:
            set_track_meta(False)
            plain = transform(image)
        finally:
            set_track_meta(True)
        assert type(plain) is torch.Tensor and plain.shape == (1, 96, 80)
        assert torch.equal(plain, with_meta.as_tensor() if hasattr(with_meta, "as_tensor") else with_meta)


@linux_only
def test_native_pools_are_held_to_the_torch_threads() -> None:
    """numpy's BLAS (and any OpenMP runtime loaded) starts a thread per core that spins after each call: a worker
    holds every such pool to its own threads, not the machine's cores."""
    assert _probe(1, 1, "normal")["pools"] == 1
    assert 1 <= int(_probe(0, 4, "normal")["pools"]) <= max(1, (os.cpu_count() or 1) // 4)


def test_a_pool_loaded_after_the_share_is_held_too() -> None:
    """scipy loads an OpenBLAS of its own on its first import, after the worker took its share: it starts with
    the worker's threads, not the machine's cores."""
    code = ("import threadpoolctl, torch\n"
            "from medcycle.serving import cpu\n"
            "cpu.apply(threads=1, workers=1, priority='normal')\n"
            "import scipy.linalg\n"
            "print(sorted(p['num_threads'] for p in threadpoolctl.threadpool_info()))")
    env = {k: v for k, v in os.environ.items() if k not in cpu.POOL_VARIABLES}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                          env={**env, "PYTHONPATH": os.pathsep.join(sys.path)})
    threads = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(threads) >= 2 and set(threads) == {1}  # numpy's pool and scipy's at least


def test_threads_for_shares_cores_out_among_workers() -> None:
    assert cpu.threads_for(0, 1, 8) == 8
    assert cpu.threads_for(0, 3, 8) == 2
    assert cpu.threads_for(0, 16, 8) == 1  # never 0
    assert cpu.threads_for(5, 3, 8) == 5  # a setting wins


@pytest.mark.parametrize(("text", "cores"), [("max 100000", None), ("150000 100000", 1.5), ("50000 100000", 0.5),
                                              ("garbage", None), ("0 100000", None), ("", None)])
def test_quota_cores_reads_cgroup_cpu_max(tmp_path: Path, text: str, cores: float | None) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(text + "\n")
    assert cpu.quota_cores(path) == cores


def _v2(tmp_path: Path, quotas: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup v2 tree under ``tmp_path`` with ``cpu.max`` files, and a /proc/self/cgroup naming ``/a/b``."""
    root = tmp_path / "cgroup"
    for folder, text in quotas.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(text + "\n")
    (root / "a" / "b").mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/a/b\n")
    return proc, root


def test_cgroup_quota_takes_the_smallest_on_the_way_to_the_root(tmp_path: Path) -> None:
    proc, root = _v2(tmp_path, {"a/b": "max 100000", "a": "150000 100000", ".": "400000 100000"})
    assert cpu.cgroup_quota(proc, root) == 1.5  # the parent's quota binds the child without one
    proc, root = _v2(tmp_path / "2", {"a/b": "50000 100000", "a": "150000 100000"})
    assert cpu.cgroup_quota(proc, root) == 0.5
    proc, root = _v2(tmp_path / "3", {"a": "max 100000"})
    assert cpu.cgroup_quota(proc, root) is None


def test_cgroup_quota_reads_cgroup_v1(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    folder = root / "cpu,cpuacct" / "docker" / "c1"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("200000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")  # the root: unlimited
    (root / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("12:pids:/docker/c1\n4:cpu,cpuacct:/docker/c1\n1:name=systemd:/docker/c1\n")
    assert cpu.cgroup_quota(proc, root) == 2.0
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu.cgroup_quota(proc, root) is None


@linux_only
def test_usable_cores_is_capped_by_a_quota_rounded_up(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    proc, root = _v2(tmp_path, {"a": "50000 100000"})
    assert cpu.usable_cores(proc, root) == 1  # half a core: one thread, never 0
    proc, root = _v2(tmp_path / "2", {"a": "max 100000"})
    assert cpu.usable_cores(proc, root) == affinity
    assert cpu.usable_cores(tmp_path / "missing", tmp_path / "none") == affinity


@linux_only
def test_a_thread_that_ended_meanwhile_is_skipped() -> None:
    release = threading.Event()
    parked = [threading.Thread(target=release.wait) for _ in range(2)]
    for thread in parked:
        thread.start()
    try:
        gone = parked[0].native_id
        seen: list[int] = []

        def change(tid: int) -> None:
            if tid == gone:
                raise ProcessLookupError(tid)  # as sched_setscheduler answers for a thread that has exited
            seen.append(tid)

        listed = {int(t) for t in os.listdir("/proc/self/task")}
        cpu._each_thread(change)
        assert gone not in seen and parked[1].native_id in seen and threading.get_native_id() in seen
        assert len(seen) == len(set(seen))  # each thread once
        missed = (listed - {gone}) - set(seen)  # every other thread was visited, unless it has ended since
        assert not [tid for tid in missed if Path(f"/proc/self/task/{tid}").exists()]
    finally:
        release.set()
        for thread in parked:
            thread.join()


FREEZE_PROBE = """
import gc, json, weakref
from medcycle.serving import cpu
class Node:
    pass
node = Node(); node.me = node  # a reference cycle: only the cyclic collector frees it
ref = weakref.ref(node)
first = cpu.freeze_heap()
del node
gc.collect()
kept_while_frozen = ref() is not None  # frozen objects are left out of every collection
again = cpu.freeze_heap()
print(json.dumps({"first": first, "kept_while_frozen": kept_while_frozen, "freed_by_the_next_freeze": ref() is None,
                  "again": again, "applied": cpu.applied()}))
"""


def test_freezing_the_heap_thaws_and_collects_what_an_earlier_freeze_kept() -> None:
    """In a child process: freezing is for a worker's own process, never the test process."""
    out = subprocess.run([sys.executable, "-c", FREEZE_PROBE], capture_output=True, text=True, timeout=120,
                         check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["first"] > 1000 and got["again"] > 1000
    assert got["kept_while_frozen"] and got["freed_by_the_next_freeze"]
    assert got["applied"] is False  # freeze_heap alone does not make the process a worker's


def test_a_worker_freezes_the_heap_after_a_load_only_in_its_own_process(srv_platform: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from medcycle.serving.config import load_serving_settings
    from medcycle.serving.worker import ServingWorker
    from tests.serving.core_fixtures import CLS

    calls: list[int] = []
    monkeypatch.setattr(cpu, "freeze_heap", lambda: calls.append(1) or 0)
    worker = ServingWorker(srv_platform, prediction_log=None)
    try:
        worker.predictor(CLS)
        assert calls == []  # a test process that made a worker: nothing frozen
        monkeypatch.setattr(cpu, "_applied", True)  # as after cpu.apply in serve-worker or a deployed worker
        worker._predictors.clear()
        worker.predictor(CLS)
        assert calls == [1]  # once after the load
        worker.predictor(CLS)
        assert calls == [1]  # not for a version already loaded
        off = ServingWorker(srv_platform, prediction_log=None,
                            settings=load_serving_settings(srv_platform.settings).model_copy(
                                update={"freeze_heap": False}))
        off.predictor(CLS)
        off.close()
        assert calls == [1]
    finally:
        worker.close()
