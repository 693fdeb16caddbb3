"""Tracking tables: projects, runs, params, tags, metric series, artifacts, captures and output.

Metric points are not stored one row per point. Each ``(run, key)`` has one summary row
(:class:`MetricSeriesRow`: count, last/min/max, for fast listing and filtering) and a few chunk rows
(:class:`MetricChunkRow`) that hold up to :data:`CHUNK_POINTS` points each as packed arrays
(``int64 steps | float64 times | float64 values``, see :func:`medcycle.experiments.records.pack_points`):
a run with 10 metrics × 1,000 steps is 10 summary rows and 10 chunk rows. Resource usage is stored as
metric series under ``system/``. Artifacts, images, models, the code diff and the package freeze are
objects in the content-addressed store; rows hold their digests (and ``object_refs`` keeps them from gc).

Migration ``0005`` creates exactly these tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from medcycle.store.base import Base, UTCDateTime, utcnow

CHUNK_POINTS = 8192  # points per chunk row: a tail chunk below this is extended, then a new one starts
CHUNK_FORMAT_RAW = 1  # data = int64 steps | float64 times | float64 values, little-endian


class ProjectRow(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RunRow(Base):
    """One run. ``applied_seq`` is the highest journal record applied: replays skip what is at or below it."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_project_started", "project_id", "started_at"),
        Index("ix_runs_started", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), index=True)  # running finished failed killed crashed
    hypothesis: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    dataset_ref: Mapped[str | None] = mapped_column(String(256), nullable=True)
    dataset_digest: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(256), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    applied_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    seeded: Mapped[bool] = mapped_column(Boolean, default=False)
    verdict: Mapped[str] = mapped_column(String(32), default="not reproducible")
    verdict_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    log_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class RunParamRow(Base):
    """A hyperparameter. ``value`` is its canonical text; ``value_num`` is set when it is a number."""

    __tablename__ = "run_params"
    __table_args__ = (Index("ix_run_params_key_num", "key", "value_num"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    value_num: Mapped[float | None] = mapped_column(Float, nullable=True)


class RunTagRow(Base):
    __tablename__ = "run_tags"
    __table_args__ = (Index("ix_run_tags_key_value", "key", "value"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))


class MetricSeriesRow(Base):
    """Summary of one metric series: what listings and filters read (non-finite values read as null)."""

    __tablename__ = "run_metrics"
    __table_args__ = (Index("ix_run_metrics_key_last", "key", "last_value"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    last_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    last_time: Mapped[float] = mapped_column(Float, default=0.0)
    min_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_value: Mapped[float | None] = mapped_column(Float, nullable=True)


class MetricChunkRow(Base):
    """Up to :data:`CHUNK_POINTS` points of one series, packed; ``chunk`` numbers them from 0."""

    __tablename__ = "run_metric_chunks"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    step_min: Mapped[int] = mapped_column(BigInteger)
    step_max: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[int] = mapped_column(Integer, default=CHUNK_FORMAT_RAW)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ArtifactRow(Base):
    """An object a run wrote or read: ``kind`` is artifact, model, image or input."""

    __tablename__ = "run_artifacts"
    __table_args__ = (Index("ix_run_artifacts_run", "run_id", "kind"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CaptureRow(Base):
    """What is needed to reproduce the run: code, environment, seeds. Big parts are objects."""

    __tablename__ = "run_captures"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    commit: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    branch: Mapped[str | None] = mapped_column(String(256), nullable=True)
    dirty: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    pushed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    diff_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    packages_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    packages_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seeds: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LogChunkRow(Base):
    """A piece of the run's captured stdout or stderr, in order of ``seq``."""

    __tablename__ = "run_logs"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    stream: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    text: Mapped[str] = mapped_column(Text)
