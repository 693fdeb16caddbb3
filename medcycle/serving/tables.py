"""Serving tables: one row per distinct result (migration ``0010``).

The primary key is the result key — SHA-256 of the input digests, the model version and the canonical
parameters — so writing a result twice (a redelivered job, two workers racing, the same study sent again)
can never make a second row: the insert does nothing when the key exists. Rows hold findings and output
digests, never pixels or patient identifiers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from medcycle.store.base import Base, UTCDateTime, utcnow


class ServingResultRow(Base):
    __tablename__ = "serving_results"
    __table_args__ = (Index("ix_serving_results_version_created", "model_version_id", "created_at"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # done | refused
    model: Mapped[str] = mapped_column(String(128))
    model_version_id: Mapped[str] = mapped_column(String(32))
    model_ref: Mapped[str] = mapped_column(String(160))
    weights_digest: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(32))
    inputs_digest: Mapped[str] = mapped_column(String(64), index=True)  # SHA-256 of the ordered input digests
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    images: Mapped[int] = mapped_column(Integer)
    cases: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    compute_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the job that computed it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
