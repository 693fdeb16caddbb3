"""Catalog tables: Source → Patient → Study → Series → Instance, plus ingest bookkeeping.

Every identifier here is a pseudonym (keyed HMAC) made at ingest; no original identifier is stored.
Series carry denormalised counts so "what do we have" answers without scanning instances: ``n_instances``
and ``bytes`` (every instance, written by ingest) and, kept by database triggers, the counts by state
that feed the rollup tables (:mod:`medcycle.catalog.rollup`) the summary reads.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from medcycle.store.base import Base, UTCDateTime, new_id, utcnow


class SourceRow(Base):
    """An institution, device or feed that data comes from, with its licence and de-id profile."""

    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    licence: Mapped[str | None] = mapped_column(String(256), nullable=True)
    consent_basis: Mapped[str | None] = mapped_column(String(256), nullable=True)
    deid_profile: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PatientRow(Base):
    __tablename__ = "patients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # keyed pseudonym
    sex: Mapped[str | None] = mapped_column(String(1), nullable=True)  # M, F, O; only if the profile keeps it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StudyRow(Base):
    __tablename__ = "studies"
    __table_args__ = (Index("ix_studies_source_date", "source_id", "study_date"),)

    uid: Mapped[str] = mapped_column(String(64), primary_key=True)  # pseudonymous StudyInstanceUID
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"))
    study_date: Mapped[date | None] = mapped_column(Date, nullable=True)  # shifted per patient
    age_band: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SeriesRow(Base):
    __tablename__ = "series"
    __table_args__ = (Index("ix_series_summary", "source_id", "modality", "body_part"),)
    # The trigger-kept counts are not read back after an INSERT (no RETURNING on ingest's hot path).
    __mapper_args__ = {"eager_defaults": False}

    uid: Mapped[str] = mapped_column(String(64), primary_key=True)  # pseudonymous SeriesInstanceUID
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.uid"), index=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"))  # denormalised for summaries
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    body_part: Mapped[str | None] = mapped_column(String(64), nullable=True)  # controlled vocabulary
    body_part_raw: Mapped[str | None] = mapped_column(String(128), nullable=True)
    laterality: Mapped[str | None] = mapped_column(String(8), nullable=True)
    view_position: Mapped[str | None] = mapped_column(String(16), nullable=True)
    manufacturer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    year: Mapped[int | None] = mapped_column(Integer, nullable=True)  # of the shifted study date
    slice_thickness: Mapped[float | None] = mapped_column(Float, nullable=True)
    pixel_spacing_row: Mapped[float | None] = mapped_column(Float, nullable=True)
    pixel_spacing_col: Mapped[float | None] = mapped_column(Float, nullable=True)
    kvp: Mapped[float | None] = mapped_column(Float, nullable=True)
    convolution_kernel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    field_strength: Mapped[float | None] = mapped_column(Float, nullable=True)
    image_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    n_instances: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Kept by the rollup triggers from the series' instances (never written by code): instances in state
    # ``ok`` (every state but ``quarantined``) and quarantined ones, with their bytes. Server defaults only,
    # so bulk inserts that name their columns need not know them.
    ok_instances: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    ok_bytes: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    quarantined_instances: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    quarantined_bytes: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RollupCellRow(Base):
    """Series with ok instances, their instances and bytes, and quarantined instances, per distinct
    (source, modality, body part, manufacturer, year). Kept by triggers; see :mod:`medcycle.catalog.rollup`."""

    __tablename__ = "catalog_rollup_cells"

    cell_key: Mapped[str] = mapped_column(String(512), primary_key=True)  # rollup.encode_key of the five values
    source_id: Mapped[str] = mapped_column(String(32))
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    body_part: Mapped[str | None] = mapped_column(String(64), nullable=True)
    manufacturer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series: Mapped[int] = mapped_column(Integer)
    instances: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    quarantined: Mapped[int] = mapped_column(BigInteger)
    quarantined_bytes: Mapped[int] = mapped_column(BigInteger)


class RollupReachRow(Base):
    """Distinct patients and studies per group of one breakdown (``totals``, ``source``, ``manufacturer``,
    ``year``); the key columns a breakdown does not use are null. Kept by triggers."""

    __tablename__ = "catalog_rollup_reach"

    breakdown: Mapped[str] = mapped_column(String(16), primary_key=True)
    gkey: Mapped[str] = mapped_column(String(512), primary_key=True)  # rollup.encode_key of the breakdown's keys
    source_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    body_part: Mapped[str | None] = mapped_column(String(64), nullable=True)
    manufacturer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    patients: Mapped[int] = mapped_column(Integer)
    studies: Mapped[int] = mapped_column(Integer)


class InstanceRow(Base):
    __tablename__ = "instances"
    __table_args__ = (
        # uid last: a page of a series-level filter ("... order by uid limit 50") reads only this index.
        Index("ix_instances_series_state", "series_uid", "state", "uid"),
        Index("ix_instances_digest", "digest"),
        Index("ix_instances_state", "state"),  # the quarantine count without scanning every instance
    )

    uid: Mapped[str] = mapped_column(String(64), primary_key=True)  # pseudonymous SOPInstanceUID
    series_uid: Mapped[str] = mapped_column(ForeignKey("series.uid"))
    digest: Mapped[str] = mapped_column(String(64))  # the de-identified object in the store
    format: Mapped[str] = mapped_column(String(16))  # dicom, nifti, png, jpeg
    state: Mapped[str] = mapped_column(String(16), default="ok")  # ok, quarantined
    quarantine_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    sop_class: Mapped[str | None] = mapped_column(String(64), nullable=True)
    transfer_syntax: Mapped[str | None] = mapped_column(String(64), nullable=True)
    photometric: Mapped[str | None] = mapped_column(String(16), nullable=True)
    bits_stored: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Cheap pixel statistics (after rescale; MONOCHROME1 inverted), for EDA, OOD and drift.
    p01: Mapped[float | None] = mapped_column(Float, nullable=True)
    p05: Mapped[float | None] = mapped_column(Float, nullable=True)
    p50: Mapped[float | None] = mapped_column(Float, nullable=True)
    p95: Mapped[float | None] = mapped_column(Float, nullable=True)
    p99: Mapped[float | None] = mapped_column(Float, nullable=True)
    mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    std: Mapped[float | None] = mapped_column(Float, nullable=True)
    saturated_fraction: Mapped[float | None] = mapped_column(Float, nullable=True)
    air_fraction: Mapped[float | None] = mapped_column(Float, nullable=True)
    ingest_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IngestRunRow(Base):
    __tablename__ = "ingest_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"))
    state: Mapped[str] = mapped_column(String(16), default="running")  # running, finished
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    actor: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IngestFileRow(Base):
    """One input file's outcome, keyed by a keyed hash of its bytes: makes re-ingest a no-op."""

    __tablename__ = "ingest_files"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # HMAC(deid key, original bytes)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"))
    outcome: Mapped[str] = mapped_column(String(16))  # ingested, quarantined, rejected
    instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # never contains identifiers
    run_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
