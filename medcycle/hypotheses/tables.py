"""Hypothesis tables: the register, answers to its questions, votes, status/decision history and links.

A hypothesis is addressed as ``H-<id>``. Scores are stored with their components and the computed score
(so the register can be ranked without recomputing); the HiPPO decision is the latest call, and every
status change and decision is also appended to ``hypothesis_history``. Links name runs by id (the runs
table arrives with the tracking layer) and dataset versions by ``NAME@TAG`` plus the version digest.
Migration ``0004`` creates exactly these tables.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from medcycle.store.base import Base, UTCDateTime, utcnow


class HypothesisRow(Base):
    __tablename__ = "hypotheses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # ICE: impact, confidence, ease (whole numbers 1-10); score = I x C x E.
    ice_impact: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ice_confidence: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ice_ease: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ice_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    ice_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ice_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # RICE: reach per period, impact (0.25-3), confidence (%), effort (person-months); score = R x I x C% / E.
    rice_reach: Mapped[float | None] = mapped_column(Float, nullable=True)
    rice_impact: Mapped[float | None] = mapped_column(Float, nullable=True)
    rice_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    rice_effort: Mapped[float | None] = mapped_column(Float, nullable=True)
    rice_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    rice_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rice_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The HiPPO's latest call.
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    decision_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decision_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    decision_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HypothesisAnswerRow(Base):
    """The team's answer to one question of the catalogue (:data:`medcycle.hypotheses.vocabulary.QUESTIONS`)."""

    __tablename__ = "hypothesis_answers"

    hypothesis_id: Mapped[int] = mapped_column(ForeignKey("hypotheses.id", ondelete="CASCADE"), primary_key=True)
    question: Mapped[str] = mapped_column(String(32), primary_key=True)
    answer: Mapped[str] = mapped_column(Text)
    confidence: Mapped[str | None] = mapped_column(String(16), nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    answered_by: Mapped[str] = mapped_column(String(64))
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HypothesisVoteRow(Base):
    """One vote per user per hypothesis; voting again changes it."""

    __tablename__ = "hypothesis_votes"

    hypothesis_id: Mapped[int] = mapped_column(ForeignKey("hypotheses.id", ondelete="CASCADE"), primary_key=True)
    voter: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)  # +1 up, -1 down
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HypothesisHistoryRow(Base):
    """An append-only record of status changes (kind ``status``) and HiPPO decisions (kind ``decision``)."""

    __tablename__ = "hypothesis_history"
    __table_args__ = (Index("ix_hypothesis_history_hypothesis", "hypothesis_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hypothesis_id: Mapped[int] = mapped_column(ForeignKey("hypotheses.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    from_value: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_value: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HypothesisLinkRow(Base):
    """A run (by id) or a dataset version (``NAME@TAG`` and its digest when resolvable) a hypothesis is tested on."""

    __tablename__ = "hypothesis_links"
    __table_args__ = (
        UniqueConstraint("hypothesis_id", "kind", "target", name="uq_hypothesis_links_target"),
        Index("ix_hypothesis_links_kind_target", "kind", "target"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hypothesis_id: Mapped[int] = mapped_column(ForeignKey("hypotheses.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(256))
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
