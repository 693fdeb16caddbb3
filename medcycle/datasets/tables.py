"""Dataset tables: datasets with a mutable working set, immutable label sets and immutable versions.

A version's id is the SHA-256 of its canonical manifest (see :mod:`medcycle.datasets.manifest`); its rows,
its items and the label sets it points at are never updated or deleted. That is enforced twice: by mapper
events here (the ORM refuses to flush a change) and by database triggers (migration 0003), so neither a
bug nor a hand-written ``UPDATE`` can rewrite history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint, event
from sqlalchemy.orm import Mapped, Mapper, mapped_column

from medcycle.errors import Conflict
from medcycle.store.base import Base, UTCDateTime, new_id, utcnow


class DatasetRow(Base):
    """A named dataset: description, the human card fields, the current label set and the working set."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    label_set_id: Mapped[str | None] = mapped_column(ForeignKey("label_sets.id"), nullable=True)
    card_fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    card_edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DatasetItemRow(Base):
    """One instance in a dataset's working set (what the next ``freeze`` will capture)."""

    __tablename__ = "dataset_items"
    __table_args__ = (Index("ix_dataset_items_instance", "instance_uid"),)

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    # Deleting an instance takes it out of working sets; frozen versions refuse the delete (RESTRICT below).
    instance_uid: Mapped[str] = mapped_column(ForeignKey("instances.uid", ondelete="CASCADE"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LabelSetRow(Base):
    """An immutable set of class labels; its id is the digest of its canonical JSON (stored as an object)."""

    __tablename__ = "label_sets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    level: Mapped[str] = mapped_column(String(16))  # study, series, instance
    classes: Mapped[list[str]] = mapped_column(JSON, default=list)
    n_targets: Mapped[int] = mapped_column(Integer, default=0)
    n_labels: Mapped[int] = mapped_column(Integer, default=0)
    origin: Mapped[str | None] = mapped_column(String(256), nullable=True)  # e.g. the CSV file name
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LabelEntryRow(Base):
    """One (target, label) pair of a label set; a target with several labels has several rows."""

    __tablename__ = "label_entries"

    label_set_id: Mapped[str] = mapped_column(ForeignKey("label_sets.id"), primary_key=True)
    target_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(128), primary_key=True)


class DatasetVersionRow(Base):
    """A frozen dataset version. ``id`` is the digest of the manifest object; the row is never changed."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "seq", name="uq_dataset_versions_seq"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, 3 … within the dataset
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    label_set_id: Mapped[str | None] = mapped_column(ForeignKey("label_sets.id"), nullable=True)
    split_policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    n_items: Mapped[int] = mapped_column(Integer)
    n_patients: Mapped[int] = mapped_column(Integer)
    n_studies: Mapped[int] = mapped_column(Integer)
    n_series: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    manifest_bytes: Mapped[int] = mapped_column(BigInteger)
    split_counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    leakage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    card: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the card as generated at freeze
    card_digests: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # md/html/json objects
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DatasetVersionItemRow(Base):
    """One item of a frozen version (a copy of its manifest line, for SQL diffs, subsets and guards)."""

    __tablename__ = "dataset_version_items"
    __table_args__ = (
        Index("ix_dataset_version_items_instance", "instance_uid"),
        Index("ix_dataset_version_items_digest", "digest"),
    )

    version_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)
    instance_uid: Mapped[str] = mapped_column(ForeignKey("instances.uid"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    split: Mapped[str | None] = mapped_column(String(32), nullable=True)
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)


class DatasetTagRow(Base):
    """A human name for a version; unique within its dataset and never moved."""

    __tablename__ = "dataset_tags"

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


IMMUTABLE_TABLES = ("dataset_versions", "dataset_version_items", "label_sets", "label_entries")


def _refuse(kind: str, verb: str) -> Conflict:
    return Conflict(
        f"{kind} are immutable and cannot be {verb}",
        hint="Change the working set or import a new label set, then `medcycle dataset freeze NAME` a new version.",
    )


def _guard(cls: type[Base], kind: str) -> None:
    @event.listens_for(cls, "before_update")
    def _no_update(_mapper: Mapper[Any], _conn: Any, _target: Any) -> None:
        raise _refuse(kind, "changed")

    @event.listens_for(cls, "before_delete")
    def _no_delete(_mapper: Mapper[Any], _conn: Any, _target: Any) -> None:
        raise _refuse(kind, "deleted")


_guard(DatasetVersionRow, "dataset versions")
_guard(DatasetVersionItemRow, "dataset versions")
_guard(LabelSetRow, "label sets")
_guard(LabelEntryRow, "label sets")
