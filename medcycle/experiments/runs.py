"""Reading stored runs: resolve a reference, show one run, read metric series (exact or downsampled), logs.

A run is named by its id, an unambiguous id prefix (at least 4 characters) or its name when that is unique.
Metric series come back exactly as logged (steps, UNIX times and float64 values, in logging order);
:func:`downsample` reduces them for charts by keeping each bucket's first, minimum, maximum and last point,
so spikes survive; the stored points are never changed.
"""

from __future__ import annotations

import itertools
import math
from array import array
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.errors import NotFound, UsageError
from medcycle.experiments.query import RunSummary, summaries
from medcycle.experiments.records import unpack_points
from medcycle.experiments.tables import (
    ArtifactRow,
    CaptureRow,
    LogChunkRow,
    MetricChunkRow,
    MetricSeriesRow,
    RunRow,
)
from medcycle.objects.base import ObjectStore

MIN_PREFIX = 4


def resolve_run(session: Session, ref: str) -> RunRow:
    """The run ``ref`` names: a full id, an id prefix of at least 4 characters, or a unique name."""
    ref = ref.strip()
    row = session.get(RunRow, ref) if len(ref) == 32 else None
    if row is not None:
        return row
    candidates: list[RunRow] = []
    if len(ref) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in ref):
        candidates = list(session.scalars(select(RunRow).where(RunRow.id.startswith(ref)).limit(11)))
    if not candidates:
        candidates = list(session.scalars(select(RunRow).where(RunRow.name == ref).limit(11)))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise NotFound(f"no run {ref!r}", hint="List runs with `medcycle run list`; name one by id, id prefix or name.")
    ids = ", ".join(c.id[:12] for c in candidates[:10])
    raise UsageError(f"{ref!r} names {len(candidates)} runs ({ids})", hint="Give more characters of the run id.")


@dataclass(frozen=True, slots=True)
class MetricSummary:
    key: str
    count: int
    last: float | None
    last_step: int
    min: float | None
    max: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "count": self.count, "last": self.last, "last_step": self.last_step,
                "min": self.min, "max": self.max}


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    name: str
    kind: str
    digest: str | None
    size: int | None
    step: int | None
    meta: dict[str, Any]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "digest": self.digest, "size": self.size, "step": self.step,
                "meta": self.meta, "created_at": self.created_at.isoformat()}


@dataclass(slots=True)
class RunDetail:
    """Everything stored about one run except the raw metric points and the log text."""

    summary: RunSummary
    host: str | None
    metrics: dict[str, MetricSummary]
    artifacts: list[ArtifactInfo]
    capture: dict[str, Any] = field(default_factory=dict)
    seeds: dict[str, Any] = field(default_factory=dict)
    diff_digest: str | None = None
    packages_digest: str | None = None
    packages_hash: str | None = None
    log_bytes: int = 0

    @property
    def id(self) -> str:
        return self.summary.id

    def to_dict(self) -> dict[str, Any]:
        out = self.summary.to_dict()
        out.update({"host": self.host, "metric_summaries": {k: m.to_dict() for k, m in self.metrics.items()},
                    "artifacts": [a.to_dict() for a in self.artifacts], "capture": self.capture,
                    "seeds": self.seeds, "diff_digest": self.diff_digest, "packages_digest": self.packages_digest,
                    "packages_hash": self.packages_hash, "log_bytes": self.log_bytes})
        return out


def get_run(session: Session, ref: str) -> RunDetail:
    row = resolve_run(session, ref)
    summary = summaries(session, [row.id])[0]
    metrics = {m.key: MetricSummary(m.key, m.count, m.last_value, m.last_step, m.min_value, m.max_value)
               for m in session.scalars(select(MetricSeriesRow).where(MetricSeriesRow.run_id == row.id)
                                        .order_by(MetricSeriesRow.key))}
    artifacts = [ArtifactInfo(a.name, a.kind, a.digest, a.size, a.step, dict(a.meta or {}), a.created_at)
                 for a in session.scalars(select(ArtifactRow).where(ArtifactRow.run_id == row.id)
                                          .order_by(ArtifactRow.seq))]
    capture = session.get(CaptureRow, row.id)
    detail = RunDetail(summary=summary, host=row.host, metrics=metrics, artifacts=artifacts, log_bytes=row.log_bytes)
    if capture is not None:
        detail.capture, detail.seeds = dict(capture.data or {}), dict(capture.seeds or {})
        detail.diff_digest, detail.packages_digest = capture.diff_digest, capture.packages_digest
        detail.packages_hash = capture.packages_hash
    return detail


# -- metric series ----------------------------------------------------------------------------------
@dataclass(slots=True)
class Series:
    """Points of one metric: parallel arrays in logging order. ``count`` is the stored number of points."""

    key: str
    steps: array[int]
    times: array[float]
    values: array[float]
    count: int
    downsampled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "count": self.count, "downsampled": self.downsampled, "steps": list(self.steps),
                "times": list(self.times), "values": [v if math.isfinite(v) else None for v in self.values]}


def read_series(session: Session, run_id: str, key: str) -> Series:
    """Every stored point of ``key`` in run ``run_id``, exactly as logged."""
    steps, times, values = array("q"), array("d"), array("d")
    rows = session.execute(select(MetricChunkRow.n, MetricChunkRow.data)
                           .where(MetricChunkRow.run_id == run_id, MetricChunkRow.key == key)
                           .order_by(MetricChunkRow.chunk))
    for n, data in rows:
        s, t, v = unpack_points(data, n)
        steps.extend(s)
        times.extend(t)
        values.extend(v)
    return Series(key, steps, times, values, len(steps))


def downsample(series: Series, max_points: int) -> Series:
    """At most about ``max_points`` points: per bucket the first, min, max and last (in original order)."""
    n = series.count
    if max_points <= 0 or n <= max_points:
        return series
    import numpy as np

    values = np.frombuffer(series.values, dtype=np.float64)
    buckets = max(1, max_points // 4)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep: set[int] = set()
    clean = np.where(np.isnan(values), np.inf, values)
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        keep.update((int(lo), int(hi - 1), int(lo + np.argmin(clean[lo:hi])),
                     int(lo + np.argmax(np.where(np.isnan(values[lo:hi]), -np.inf, values[lo:hi])))))
    idx = sorted(keep)
    return Series(series.key, array("q", (series.steps[i] for i in idx)), array("d", (series.times[i] for i in idx)),
                  array("d", (series.values[i] for i in idx)), n, downsampled=True)


def metric_history(session: Session, ref: str, keys: list[str] | None = None,
                   max_points: int | None = None) -> dict[str, Series]:
    """Series of ``keys`` (default: every metric of the run), downsampled when ``max_points`` is given."""
    row = resolve_run(session, ref)
    known = list(session.scalars(select(MetricSeriesRow.key).where(MetricSeriesRow.run_id == row.id)
                                 .order_by(MetricSeriesRow.key)))
    wanted = keys or known
    missing = [k for k in wanted if k not in known]
    if missing:
        raise NotFound(f"run {row.id[:12]} has no metric {missing[0]!r}",
                       hint=f"Its metrics: {', '.join(known[:30]) or 'none'}.")
    out = {}
    for key in wanted:
        series = read_series(session, row.id, key)
        out[key] = downsample(series, max_points) if max_points else series
    return out


# -- logs and code ----------------------------------------------------------------------------------
def read_log(session: Session, ref: str, *, stream: str | None = None, tail_bytes: int | None = None) -> str:
    """The run's captured output in order (``stream``: stdout, stderr or both)."""
    row = resolve_run(session, ref)
    if stream not in (None, "stdout", "stderr"):
        raise UsageError(f"{stream!r} is not a stream", hint="Use stdout or stderr (or leave it out for both).")
    stmt = select(LogChunkRow.text).where(LogChunkRow.run_id == row.id).order_by(LogChunkRow.seq)
    if stream:
        stmt = stmt.where(LogChunkRow.stream == stream)
    text = "".join(session.scalars(stmt))
    if tail_bytes is not None and len(text) > tail_bytes:
        text = text[-tail_bytes:]
    return text


def read_diff(session: Session, objects: ObjectStore, ref: str) -> bytes | None:
    """The uncommitted diff captured with the run (``git apply`` restores it), or ``None`` for a clean tree."""
    row = resolve_run(session, ref)
    capture = session.get(CaptureRow, row.id)
    if capture is None or capture.diff_digest is None:
        return None
    return objects.get(capture.diff_digest)


def read_packages(session: Session, objects: ObjectStore, ref: str) -> list[str]:
    """The run's package freeze, one ``name==version`` per line."""
    row = resolve_run(session, ref)
    capture = session.get(CaptureRow, row.id)
    if capture is None or capture.packages_digest is None:
        return []
    return objects.get(capture.packages_digest).decode().splitlines()
