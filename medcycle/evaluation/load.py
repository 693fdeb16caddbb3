"""The load smoke test of ``medcycle evaluate``: the version behind the serving predictor, in process.

The model version is loaded as serving loads it (:class:`medcycle.serving.predictor.Predictor`: the weights
by digest, the training's evaluation transform, postprocessing; without the OOD gate, which the OOD suite
judges, so every case reaches the network) and fed ``requests`` cases of the evaluated
split — read by the training readers, as the serving intake decodes them — in calls of ``batch`` cases
(the dynamic batcher's unit), after ``warmup`` untimed calls. Each case's latency is the wall time of the call
that carried it; throughput is cases per second over the timed calls. No queue, database or HTTP is
involved: the number is the model path's (decode excluded), which is what a release gate can hold a version
to; ``bench/serving.py`` measures the whole worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medcycle.errors import UsageError

if TYPE_CHECKING:
    from medcycle.evaluation.policy import Load
    from medcycle.evaluation.predict import Loaded


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    batch: int
    seconds: float
    throughput: float  # cases per second
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "batch": self.batch, "seconds": round(self.seconds, 4),
                "throughput": round(self.throughput, 3), "p50_ms": round(self.p50_ms, 3),
                "p99_ms": round(self.p99_ms, 3), "max_ms": round(self.max_ms, 3), "statuses": self.statuses}


def run_load(loaded: Loaded, folder: Path, split: str, spec: Load, *, device: str = "cpu") -> LoadResult:
    """Time ``spec.requests`` cases of ``split`` through a serving predictor of ``loaded``."""
    from medcycle.serving.predictor import CaseInput, Predictor
    from medcycle.training.data import index, read_volume

    samples = index(folder, loaded.config).split(split)
    inputs = [CaseInput(pixels=read_volume(s.image)) for s in samples[:min(len(samples), spec.requests)]]
    if not inputs:  # pragma: no cover - index() refuses an empty split
        raise UsageError(f"no cases in split {split!r} for the load test", hint="Check the policy's split.")
    predictor = Predictor(loaded, device=device, max_batch=spec.batch)
    predictor.warm()
    cursor = 0

    def take(n: int) -> list[CaseInput]:
        nonlocal cursor
        out = [inputs[(cursor + i) % len(inputs)] for i in range(n)]
        cursor += n
        return out

    for _ in range(spec.warmup):
        predictor.predict(take(spec.batch))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    done = 0
    start = time.perf_counter()
    while done < spec.requests:
        n = min(spec.batch, spec.requests - done)
        t0 = time.perf_counter()
        results = predictor.predict(take(n))
        elapsed = (time.perf_counter() - t0) * 1000.0
        latencies += [elapsed] * n
        for r in results:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        done += n
    seconds = time.perf_counter() - start
    lat = np.asarray(latencies)
    return LoadResult(spec.requests, spec.batch, seconds, spec.requests / seconds if seconds > 0 else float("inf"),
                      float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), float(lat.max()), statuses)


def failures(result: LoadResult, spec: Load) -> list[str]:
    """The gate's reasons (empty when the version meets every bound)."""
    out = []
    if spec.p99_ms_max is not None and result.p99_ms > spec.p99_ms_max:
        out.append(f"p99 latency {result.p99_ms:.1f} ms > {spec.p99_ms_max:g} ms")
    if spec.p50_ms_max is not None and result.p50_ms > spec.p50_ms_max:
        out.append(f"p50 latency {result.p50_ms:.1f} ms > {spec.p50_ms_max:g} ms")
    if spec.min_throughput is not None and result.throughput < spec.min_throughput:
        out.append(f"throughput {result.throughput:.1f} cases/s < {spec.min_throughput:g}")
    bad = {k: v for k, v in result.statuses.items() if k != "ok"}
    if bad:
        out.append("not every case was predicted: " + ", ".join(f"{v} {k}" for k, v in sorted(bad.items())))
    return out
