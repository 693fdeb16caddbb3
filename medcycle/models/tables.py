"""Registry tables: models, versions, aliases, every alias move, and evaluation gate reports.

A version is immutable once registered (its weights are an object by digest; the run, dataset version,
label set and commit it came from are recorded). An alias (``production``, ``staging``, any name) points at
one version; every move is an :class:`AliasEventRow`, which is what ``rollback`` walks back. Migration
``0009`` creates these tables; ``0014`` adds :class:`CaseReviewRow` (the review gallery's verdicts).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from medcycle.store.base import Base, UTCDateTime, utcnow


class ModelRow(Base):
    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    task: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model", "version", name="uq_model_versions_model_version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(ForeignKey("models.name", ondelete="RESTRICT"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    weights_digest: Mapped[str] = mapped_column(String(64), index=True)
    weights_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    dataset_ref: Mapped[str | None] = mapped_column(String(256), nullable=True)
    dataset_digest: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    label_set: Mapped[str | None] = mapped_column(String(128), nullable=True)
    commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    contract: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    card: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ood_gate_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AliasRow(Base):
    __tablename__ = "model_aliases"

    model: Mapped[str] = mapped_column(ForeignKey("models.name", ondelete="CASCADE"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AliasEventRow(Base):
    """One move of an alias: promote (with the gate report that allowed it), force (with a reason), rollback."""

    __tablename__ = "model_alias_events"
    __table_args__ = (Index("ix_model_alias_events_model_alias", "model", "alias", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128))
    alias: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))  # promote | force | rollback | remove
    from_version_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_version_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    report_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    by: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GateReportRow(Base):
    """The outcome of release gates for one version (``medcycle evaluate`` writes these)."""

    __tablename__ = "model_gate_reports"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    passed: Mapped[bool] = mapped_column(Boolean)
    policy: Mapped[str | None] = mapped_column(String(256), nullable=True)
    dataset_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PinnedCaseRow(Base):
    """A case every later version of a model must get right (the regression suite): a reviewer pins it."""

    __tablename__ = "model_pinned_cases"

    model: Mapped[str] = mapped_column(ForeignKey("models.name", ondelete="CASCADE"), primary_key=True)
    case_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    expected: Mapped[str] = mapped_column(String(128))  # the class, or a minimum Dice for segmentation
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    from_version_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    pinned_by: Mapped[str] = mapped_column(String(64))
    pinned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CaseReviewRow(Base):
    """A reviewer's verdict on one case of an evaluation (the review gallery): ok, model error, label error or
    unsure, with a note. One verdict per case and report; changing it is audited like setting it."""

    __tablename__ = "model_case_reviews"
    __table_args__ = (Index("ix_model_case_reviews_model_case", "model", "case_key"),)

    report_id: Mapped[str] = mapped_column(ForeignKey("model_gate_reports.id", ondelete="CASCADE"),
                                           primary_key=True)
    case_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    verdict: Mapped[str] = mapped_column(String(16))  # ok | model_error | label_error | unsure
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewer: Mapped[str] = mapped_column(String(64))
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
