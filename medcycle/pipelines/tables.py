"""Pipeline tables: runs, the state of each step in a run, and the step cache.

* ``pipeline_runs`` — one execution of a pipeline file: its validated spec (JSON), status, executor, times.
* ``pipeline_steps`` — one row per step per run: state (pending, running, cached, succeeded, failed,
  skipped), cache key and whether it was a hit, the inputs the key was computed from, outputs
  (``{key: {"path", "digest"}}``), the queue job and tracked run when it ran on an agent, log digest, error.
* ``step_cache`` — cache key → the outputs a successful execution produced. A later step with the same key
  reuses them without executing. Output objects are referenced (``object_refs``) by their cache entry and
  by the run that produced them, so ``medcycle store gc`` keeps them.

Migration ``0006`` creates exactly these tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from medcycle.store.base import Base, UTCDateTime, utcnow


class PipelineRunRow(Base):
    __tablename__ = "pipeline_runs"
    __table_args__ = (
        Index("ix_pipeline_runs_pipeline_started", "pipeline", "started_at"),
        Index("ix_pipeline_runs_started", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(128))
    project: Mapped[str | None] = mapped_column(String(128), nullable=True)
    spec_digest: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # running succeeded failed
    executor: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str | None] = mapped_column(String(128), nullable=True)
    forced: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class PipelineStepRow(Base):
    __tablename__ = "pipeline_steps"

    run_id: Mapped[str] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    needs: Mapped[list[str]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16))
    cache_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    command: Mapped[list[str]] = mapped_column(JSON, default=list)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tracked_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class StepCacheRow(Base):
    __tablename__ = "step_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(128))
    step: Mapped[str] = mapped_column(String(64))
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    log_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    run_id: Mapped[str] = mapped_column(String(32))  # the pipeline run whose execution produced the entry
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tracked_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_hit_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
