"""The DICOM intake index: one row per study submitted through STOW-RS or the C-STORE SCP.

It is what QIDO-RS and WADO-RS look results up in. It holds no patient data: the study is keyed by its
pseudonymous StudyInstanceUID (the keyed HMAC the de-identification gives it, which a query by the original
UID recomputes), and the original identity lives only in the sealed return address it points at (see
:mod:`medcycle.serving.reid`). Resending the same instances for the same model finds the same row (unique on
study, inputs and model), so intake is idempotent.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from medcycle.store.base import Base, UTCDateTime, new_id, utcnow


class DicomStudyRow(Base):
    __tablename__ = "serving_dicom_studies"
    __table_args__ = (
        UniqueConstraint("study_key", "inputs_digest", "model", name="uq_serving_dicom_studies_submission"),
        Index("ix_serving_dicom_studies_study_key", "study_key", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    study_key: Mapped[str] = mapped_column(String(64))  # pseudonymous StudyInstanceUID
    inputs_digest: Mapped[str] = mapped_column(String(64))  # SHA-256 over the sorted instance digests
    model: Mapped[str] = mapped_column(String(256))  # the reference asked for, e.g. chest@production
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    via: Mapped[str] = mapped_column(String(16))  # stow-rs | c-store
    calling_ae: Mapped[str | None] = mapped_column(String(16), nullable=True)
    instances: Mapped[int] = mapped_column(Integer)
    series: Mapped[int] = mapped_column(Integer)
    modalities: Mapped[str] = mapped_column(String(64))  # e.g. "CT" or "CT\\PT"
    return_digest: Mapped[str] = mapped_column(String(64))  # the sealed return address (an object)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
