"""Serving throughput and latency: dynamic batching against batch size 1, in one run, on the CPU.

    .venv/bin/python bench/serving.py [--quick] [--batch 16] [--delay-ms 10] [--tmp DIR]

Setup: demo radiographs (64 × 64 DICOM) are ingested, a small MONAI network (DenseNet, ``densenet-small``)
is trained for one epoch on them and registered; one inference job per radiograph is submitted through
:func:`medcycle.serving.intake.submit` (timed: the intake rate). Those payloads (object digests only) are then
re-enqueued with distinct parameters (a different threshold each, so every job has its own result key and is
really computed — the stored-result shortcut would otherwise answer them) and without output files
(``outputs: []``; JSON findings only), so the numbers are the worker's, not PNG encoding's.

Measured, each for batch size 1 and for ``--batch`` (max images per batch, ``--delay-ms`` longest wait):

1. **raw model** — the network alone on preprocessed tensors (images/s): the ceiling batching can reach.
2. **synthetic model** costing ``a + b·n`` (a sleep: a = 20 ms per call, b = 1 ms per image) through the whole
   worker (queue → batcher → decode → preprocess → model → result row → prediction log → complete): shows the
   batcher turns a per-call cost into throughput (target ≥ 2.5× over batch size 1).
   Measured again with the prediction log off, to show its share of the per-job cost.
3. **MONAI model end to end** — the same path with the real network (images/s), and as a share of the raw
   model's batched throughput.
4. **latency** p50/p99 (enqueue → job finished) with jobs arriving at 70 % of each mode's measured
   end-to-end capacity (synthetic model, open loop, evenly spaced arrivals).

The GPU path (``device: cuda``) is not measured here: these machines have no GPU. Nor are the 2× overload
(429 latency, memory) and the Celery comparison of the issue measured by this script. Results are printed and
written to ``bench/results/serving.json``.
"""

from __future__ import annotations

import argparse
import json
import platform as host
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medcycle.platform import Platform  # noqa: E402
from medcycle.serving import intake  # noqa: E402
from medcycle.serving.worker import ServingWorker  # noqa: E402
from medcycle.testing.platform import make_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serving.json"
MODEL = "bench-cls"
A_S, B_S = 0.020, 0.001  # the synthetic model: 20 ms per call + 1 ms per image


class SleepNet:
    """A model whose forward costs ``a + b·n`` (sleeping: no CPU contention with the worker's own work)."""

    def __init__(self, a: float, b: float, classes: int = 2) -> None:
        import torch

        self.a, self.b, self.classes, self.torch = a, b, classes, torch
        self.calls = 0

    def __call__(self, x: Any) -> Any:
        self.calls += 1
        time.sleep(self.a + self.b * int(x.shape[0]))
        return self.torch.zeros((int(x.shape[0]), self.classes))

    def to(self, _device: Any) -> SleepNet:
        return self

    def eval(self) -> SleepNet:
        return self


def setup(tmp: Path, quick: bool) -> tuple[Platform, list[dict[str, Any]], float]:
    from medcycle.models import registry
    from medcycle.training.config import example, validate
    from medcycle.training.demo_data import generate, load
    from medcycle.training.trainers import train_version

    n = 32 if quick else 64
    demo = generate(tmp / "demo", seed=0, radiographs=n, volumes=0, size=64)
    p = Platform(make_settings(tmp / "home", job_queue_limit=100_000))
    p.init()
    key = p.settings.resolved_deid_key_file
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key.write_text("5eed" * 16 + "\n")
    key.chmod(0o600)
    data = load(p, demo.root, kinds=("xr",))["demo-xr"]
    cfg = example("classification-2d", data)
    cfg["training"] = {**cfg["training"], "threads": 1, "epochs": 1, "early_stopping": None}
    cfg["model"] = {"name": "densenet-small", "width": 8, "depth": 3}
    options = {"journal_dir": tmp / "journals", "resources": False, "capture_output": False, "capture": False}
    result = train_version(p, validate(cfg), dataset=data, run_options=options)
    with p.session() as s:
        registry.register(s, p.objects, MODEL, run_id=result.run_id)
    files = sorted((demo.root / "dicom").rglob("xr/image.dcm"))
    started = time.perf_counter()
    jobs = [intake.submit(p, [f], model=MODEL) for f in files]
    intake_rate = len(jobs) / (time.perf_counter() - started)
    payloads = [dict(j.payload) for j in jobs]
    worker = ServingWorker(p, max_batch_images=64, max_delay_ms=5, idle_wait_ms=20)  # drain + warm the cache
    while p.jobs.stats("inference").active:
        worker.run_once()
    return p, payloads, intake_rate


_counter = 0


def enqueue(p: Platform, payloads: list[dict[str, Any]], n: int) -> list[str]:
    """``n`` jobs from the stored payloads, each with its own result key (see the module docstring)."""
    global _counter
    ids = []
    for i in range(n):
        _counter += 1
        payload = dict(payloads[i % len(payloads)])
        payload["params"] = {"threshold": round(1e-6 * _counter, 9), "outputs": []}
        ids.append(p.jobs.enqueue("inference", payload).id)
    return ids


def drain(p: Platform, worker: ServingWorker, n: int) -> float:
    """Seconds the worker takes to finish ``n`` queued jobs."""
    started = time.perf_counter()
    done = 0
    while done < n:
        done += worker.run_once()
    return time.perf_counter() - started


def make_worker(p: Platform, batch: int, delay_ms: int, model: Any = None, *, log: bool = True) -> ServingWorker:
    extra: dict[str, Any] = {} if log else {"prediction_log": None}
    worker = ServingWorker(p, max_batch_images=batch, max_delay_ms=delay_ms, idle_wait_ms=20, **extra)
    predictor = worker.predictor(MODEL)
    if model is not None:
        predictor.model = model
    return worker


def raw_throughput(p: Platform, batch: int, repeats: int) -> float:
    import torch

    from medcycle.serving.predictor import Predictor

    predictor = Predictor.load(p, MODEL)
    x = [torch.rand((1, *predictor.transform.size)) for _ in range(batch)]
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(max(1, 64 // batch)):
            predictor.forward(x)
        best = min(best, (time.perf_counter() - started) / (max(1, 64 // batch) * batch))
    return 1.0 / best


def latency_at(p: Platform, payloads: list[dict[str, Any]], batch: int, delay_ms: int, rate: float,
               seconds: float) -> dict[str, float]:
    worker = make_worker(p, batch, delay_ms, SleepNet(A_S, B_S))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    ids: list[str] = []
    started = time.perf_counter()
    k = 0
    while time.perf_counter() - started < seconds:
        due = started + k / rate
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        ids += enqueue(p, payloads, 1)
        k += 1
    until = time.monotonic() + 120
    while p.jobs.stats("inference").active and time.monotonic() < until:
        time.sleep(0.05)
    stop.set()
    thread.join()
    lat = []
    for job_id in ids:
        job = p.jobs.get(job_id)
        if job.finished_at and job.created_at:
            lat.append((job.finished_at - job.created_at).total_seconds())
    arr = np.asarray(lat) * 1000
    return {"jobs": len(ids), "finished": len(lat), "rate_per_s": round(rate, 1),
            "p50_ms": round(float(np.percentile(arr, 50)), 1), "p99_ms": round(float(np.percentile(arr, 99)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--delay-ms", type=int, default=10)
    parser.add_argument("--tmp", type=Path, default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-", dir=args.tmp))
    out: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "machine": host.platform(),
                           "python": host.python_version(), "torch": torch.__version__, "device": "cpu",
                           "batch": args.batch, "delay_ms": args.delay_ms, "quick": args.quick}
    try:
        print("setting up (demo data, one epoch of densenet-small, intake) …", flush=True)
        p, payloads, intake_rate = setup(tmp, args.quick)
        out["intake_jobs_per_s"] = round(intake_rate, 1)
        n = 96 if args.quick else 320
        rows: list[tuple[str, float, float]] = []

        raw1, rawb = raw_throughput(p, 1, 3), raw_throughput(p, args.batch, 3)
        rows.append(("raw MONAI model (images/s)", raw1, rawb))

        synth: dict[int, float] = {}
        for batch in (1, args.batch):
            worker = make_worker(p, batch, args.delay_ms, SleepNet(A_S, B_S))
            enqueue(p, payloads, n)
            synth[batch] = n / drain(p, worker, n)
        rows.append((f"synthetic {A_S * 1000:g} ms + {B_S * 1000:g} ms/image, end to end", synth[1], synth[args.batch]))
        quiet: dict[int, float] = {}
        for batch in (1, args.batch):
            worker = make_worker(p, batch, args.delay_ms, SleepNet(A_S, B_S), log=False)
            enqueue(p, payloads, n)
            quiet[batch] = n / drain(p, worker, n)
        rows.append(("  the same without the prediction log", quiet[1], quiet[args.batch]))

        e2e: dict[int, float] = {}
        for batch in (1, args.batch):
            worker = make_worker(p, batch, args.delay_ms)
            enqueue(p, payloads, n)
            e2e[batch] = n / drain(p, worker, n)
        rows.append(("MONAI model, end to end (images/s)", e2e[1], e2e[args.batch]))

        seconds = 4.0 if args.quick else 10.0
        latency = {str(b): latency_at(p, payloads, b, args.delay_ms, 0.7 * synth[b], seconds)
                   for b in (1, args.batch)}
        p.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'':58} {'batch 1':>10} {f'batch {args.batch}':>10} {'ratio':>7}")
    for name, one, many in rows:
        print(f"{name:58} {one:10.1f} {many:10.1f} {many / one:6.2f}x")
    share = e2e[args.batch] / rawb
    print(f"\nintake: {intake_rate:.1f} jobs/s (de-identify, check, store, enqueue; one DICOM each)")
    print(f"end-to-end MONAI throughput = {share:.0%} of the raw model's batched throughput")
    for b, lat in latency.items():
        print(f"latency at 70% of capacity, batch {b:>3}: {lat['rate_per_s']:.1f} jobs/s → p50 {lat['p50_ms']} ms, "
              f"p99 {lat['p99_ms']} ms ({lat['finished']}/{lat['jobs']} finished)")
    gain = synth[args.batch] / synth[1]
    print(f"\n[{'met ' if gain >= 2.5 else 'MISS'}] batching gain on the a + b·n model ≥ 2.5×: {gain:.2f}×")
    print(f"[{'met ' if share >= 0.8 else 'MISS'}] end-to-end ≥ 80% of the raw batched model: {share:.0%}")
    print("GPU: not measured (no GPU on this machine); 2x-overload 429 timing, memory and Celery: not measured.")
    out.update({"rows": [{"name": r[0], "batch_1": round(r[1], 2), "batched": round(r[2], 2),
                          "ratio": round(r[2] / r[1], 3)} for r in rows],
                "end_to_end_share_of_raw": round(share, 3), "latency_at_70pct": latency,
                "targets": {"batching_gain_2_5x": gain >= 2.5, "end_to_end_80pct": share >= 0.8}})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
