"""Monitoring tables: the prediction log, drift references and windows, alerts, silences and reports.

The prediction log holds no patient data: header fields from a fixed allow-list (device, modality, body
part, geometry — never names, ids, dates or UIDs), input statistics, the OOD decision, an output summary,
latency and outcome. Rows older than the retention period are deleted by ``medcycle monitor purge``.
Migration ``0011`` creates exactly these tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from medcycle.store.base import Base, UTCDateTime, utcnow


class PredictionRow(Base):
    """One inference job's record (see :class:`medcycle.monitoring.log.PredictionRecord`)."""

    __tablename__ = "prediction_log"
    __table_args__ = (
        Index("ix_prediction_log_version_at", "model_version", "at"),
        Index("ix_prediction_log_source_at", "source", "at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    model_version: Mapped[str] = mapped_column(String(160))  # NAME@vN
    model_version_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source: Mapped[str | None] = mapped_column(String(128), nullable=True)
    manufacturer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    device_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    body_part: Mapped[str | None] = mapped_column(String(64), nullable=True)
    view_position: Mapped[str | None] = mapped_column(String(16), nullable=True)
    header: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    input_digests: Mapped[list[str]] = mapped_column(JSON, default=list)
    input_stats: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    ood_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    ood_ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    ood_layer: Mapped[str | None] = mapped_column(String(16), nullable=True)
    ood_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    predicted: Mapped[str | None] = mapped_column(String(128), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    mask_area: Mapped[float | None] = mapped_column(Float, nullable=True)
    mask_components: Mapped[int | None] = mapped_column(Integer, nullable=True)
    mask_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # float32, little-endian
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), index=True)  # ok | error | timeout | refused
    error_class: Mapped[str | None] = mapped_column(String(128), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)


class ReferenceRow(Base):
    """A model version's drift reference: statistics of its validation predictions, calibrated thresholds.

    The full reference (PCA, reference points, per-device statistics, null quantiles) is a JSON object in
    the object store (``digest``); ``summary`` holds what pages show. The newest row of a version is used.
    """

    __tablename__ = "monitoring_references"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(160), index=True)
    model_version_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    dataset_ref: Mapped[str | None] = mapped_column(String(256), nullable=True)
    dataset_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    split: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cases: Mapped[int] = mapped_column(Integer)
    window: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DriftWindowRow(Base):
    """One tested window: ``size`` consecutive successful predictions of a model version, every signal's
    statistic against its calibrated threshold. Windows are cut in prediction order and never overlap."""

    __tablename__ = "monitoring_drift_windows"
    __table_args__ = (UniqueConstraint("model_version", "seq", name="uq_monitoring_drift_windows_version_seq"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(160))
    reference_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_prediction_id: Mapped[str] = mapped_column(String(32))
    signals: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # name → {statistic, threshold, drift, …}
    drifted: Mapped[list[str]] = mapped_column(JSON, default=list)
    paged: Mapped[list[str]] = mapped_column(JSON, default=list)  # signals whose persistence rule fired here
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertRow(Base):
    """One alert, deduplicated by ``key``: a repeat while it is open counts up instead of adding a row."""

    __tablename__ = "monitoring_alerts"
    __table_args__ = (Index("ix_monitoring_alerts_key_state", "key", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(256))  # what deduplicates: kind/model/signal…
    group_key: Mapped[str] = mapped_column(String(256), index=True)  # what one notification gathers
    kind: Mapped[str] = mapped_column(String(32))  # drift | error_rate | ood_rate | latency | …
    severity: Mapped[str] = mapped_column(String(16))  # info | warning | page
    state: Mapped[str] = mapped_column(String(16), index=True)  # open | acknowledged | resolved
    title: Mapped[str] = mapped_column(String(512))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    links: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_version: Mapped[str | None] = mapped_column(String(160), nullable=True)
    count: Mapped[int] = mapped_column(Integer, default=1)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    notified_severity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    acked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SilenceRow(Base):
    """Alerts whose key matches ``pattern`` (shell-style) are recorded but not sent until ``until``."""

    __tablename__ = "monitoring_silences"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pattern: Mapped[str] = mapped_column(String(256))
    until: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReportRow(Base):
    """A generated report; ``slot`` (``2024-05-01T14:00``) makes the scheduled ones unique."""

    __tablename__ = "monitoring_reports"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    slot: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    html_digest: Mapped[str] = mapped_column(String(64))
    posted_to: Mapped[str | None] = mapped_column(String(256), nullable=True)  # scheme://host only
    post_status: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
