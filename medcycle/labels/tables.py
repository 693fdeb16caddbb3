"""Labels tables: schemas, readers, immutable annotations, labeling tasks, assignments, adjudications, label sets.

What never changes, and why:

- ``label_schemas`` rows are versions of a schema file; the id is the SHA-256 of the canonical schema body
  (also stored as an object). A changed file makes a new version; old versions stay resolvable.
- ``annotations`` are statements a reader made at a time; the id is the digest of their content. Correcting
  one means adding another (a new round or an adjudication), never rewriting it.
- ``annotation_sets`` (the labels layer's *label sets*: chosen or consensus annotations + a schema version)
  and their members; the id is the digest of the stored body. The name ``label_sets`` belongs to the CSV
  class-label sets of :mod:`medcycle.datasets` (which a label set of this layer can be turned into).

These are guarded twice, as dataset versions are: mapper events refuse updates and deletes in the ORM, and
database triggers (migration 0008) refuse them in SQL. Tasks, task items, assignments, readers and
adjudications are working state and do change (progress, submissions, resolutions).
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
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, Mapper, mapped_column

from medcycle.errors import Conflict
from medcycle.store.base import Base, UTCDateTime, utcnow

UID = 64  # catalog uids (pseudonymous DICOM UIDs) fit in 64 characters
NAME = 64  # user / reader names


class LabelSchemaRow(Base):
    """One version of a label schema: its classes with the annotation kinds each allows."""

    __tablename__ = "label_schemas"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_label_schemas_name_version"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # digest of the canonical body (an object)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, 3 … within the name
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    level: Mapped[str] = mapped_column(String(16))  # instance, series, study
    multi_label: Mapped[bool] = mapped_column(Boolean, default=False)
    classes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # [{"name", "kinds", …}]
    origin: Mapped[str | None] = mapped_column(String(256), nullable=True)  # e.g. the file name
    created_by: Mapped[str] = mapped_column(String(NAME))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReaderRow(Base):
    """A person (or model) who reads studies, with the flags that gate assignment and adjudication.

    ``qualified`` lets a reader be assigned items; ``senior`` lets them resolve adjudications. The exam
    system (gold-standard sets, scorecards) will set these; for now an admin does.
    """

    __tablename__ = "label_readers"

    name: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    qualified: Mapped[bool] = mapped_column(Boolean, default=False)
    senior: Mapped[bool] = mapped_column(Boolean, default=False)
    certification: Mapped[str | None] = mapped_column(String(128), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_by: Mapped[str] = mapped_column(String(NAME))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LabelTaskRow(Base):
    """A labeling task (``T-<id>``): items of a dataset version or a catalog query, read by N readers each."""

    __tablename__ = "label_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    schema_id: Mapped[str] = mapped_column(ForeignKey("label_schemas.id"), index=True)
    level: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(512))  # "dataset chest@v1" or "query modality == 'CR'"
    origin_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the dataset version id
    readers: Mapped[list[str]] = mapped_column(JSON, default=list)  # the pool assignment drew from
    readers_per_item: Mapped[int] = mapped_column(Integer)
    blinded: Mapped[bool] = mapped_column(Boolean, default=True)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    adjudication_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="open")  # open, closed
    n_items: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(NAME))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TaskItemRow(Base):
    """One item of a task and where it stands: open → complete, or open → adjudication → resolved."""

    __tablename__ = "label_task_items"
    __table_args__ = (Index("ix_label_task_items_state", "task_id", "state"),)

    task_id: Mapped[int] = mapped_column(ForeignKey("label_tasks.id", ondelete="CASCADE"), primary_key=True)
    item_uid: Mapped[str] = mapped_column(String(UID), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="open")
    metric: Mapped[str | None] = mapped_column(String(32), nullable=True)
    agreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AssignmentRow(Base):
    """Item ``item_uid`` of a task given to ``reader``; the primary key makes a second copy impossible."""

    __tablename__ = "label_assignments"
    __table_args__ = (Index("ix_label_assignments_reader_state", "reader", "state"),)

    task_id: Mapped[int] = mapped_column(ForeignKey("label_tasks.id", ondelete="CASCADE"), primary_key=True)
    item_uid: Mapped[str] = mapped_column(String(UID), primary_key=True)
    reader: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)  # order in the reader's queue
    state: Mapped[str] = mapped_column(String(16), default="assigned")  # assigned, submitted
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class AnnotationRow(Base):
    """One reader's statement about one item (a class, or a labelled box, polygon or mask). Immutable.

    ``geometry`` holds box/polygon coordinates, or a mask's encoding, shape, dtype, spacing, origin and
    direction; the mask's bytes are the object ``mask_digest``.
    """

    __tablename__ = "annotations"
    __table_args__ = (
        Index("ix_annotations_task_item", "task_id", "item_uid"),
        Index("ix_annotations_item", "item_uid"),
        Index("ix_annotations_reader", "reader"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # digest of the canonical content
    item_uid: Mapped[str] = mapped_column(String(UID))
    level: Mapped[str] = mapped_column(String(16))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("label_tasks.id"), nullable=True)
    reader: Mapped[str] = mapped_column(String(NAME))
    round: Mapped[int] = mapped_column(Integer, default=1)
    stage: Mapped[str] = mapped_column(String(16), default="read")  # read, adjudication, import, model
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(128))
    geometry: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    mask_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tool: Mapped[str | None] = mapped_column(String(128), nullable=True)  # tool or model version
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # time spent on the item
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AdjudicationRow(Base):
    """An item whose readers disagreed beyond the task's threshold, waiting for (or resolved by) a senior."""

    __tablename__ = "label_adjudications"
    __table_args__ = (Index("ix_label_adjudications_state", "state"),)

    task_id: Mapped[int] = mapped_column(ForeignKey("label_tasks.id", ondelete="CASCADE"), primary_key=True)
    item_uid: Mapped[str] = mapped_column(String(UID), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="open")  # open, resolved
    metric: Mapped[str] = mapped_column(String(32))
    agreement: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_by: Mapped[str | None] = mapped_column(String(NAME), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decision: Mapped[str | None] = mapped_column(String(128), nullable=True)  # "reader:NAME" or "new"
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    annotation_ids: Mapped[list[str]] = mapped_column(JSON, default=list)  # the final annotations


class AnnotationSetRow(Base):
    """A label set: chosen or consensus annotations under one schema version; id = digest of its body object."""

    __tablename__ = "annotation_sets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    schema_id: Mapped[str] = mapped_column(ForeignKey("label_schemas.id"), index=True)
    level: Mapped[str] = mapped_column(String(16))
    classes: Mapped[list[str]] = mapped_column(JSON, default=list)
    n_items: Mapped[int] = mapped_column(Integer)
    n_annotations: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    origin: Mapped[str | None] = mapped_column(String(256), nullable=True)  # "task T-3", "consensus staple", …
    created_by: Mapped[str] = mapped_column(String(NAME))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AnnotationSetMemberRow(Base):
    """Which stored annotations a label set was made from (provenance; the body object holds the content)."""

    __tablename__ = "annotation_set_members"

    set_id: Mapped[str] = mapped_column(ForeignKey("annotation_sets.id"), primary_key=True)
    annotation_id: Mapped[str] = mapped_column(ForeignKey("annotations.id"), primary_key=True, index=True)


IMMUTABLE_TABLES = ("label_schemas", "annotations", "annotation_sets", "annotation_set_members")


def _refuse(kind: str, verb: str, hint: str) -> Conflict:
    return Conflict(f"{kind} are immutable and cannot be {verb}", hint=hint)


def _guard(cls: type[Base], kind: str, hint: str) -> None:
    @event.listens_for(cls, "before_update")
    def _no_update(_mapper: Mapper[Any], _conn: Any, _target: Any) -> None:
        raise _refuse(kind, "changed", hint)

    @event.listens_for(cls, "before_delete")
    def _no_delete(_mapper: Mapper[Any], _conn: Any, _target: Any) -> None:
        raise _refuse(kind, "deleted", hint)


_guard(LabelSchemaRow, "label schema versions", "Add the changed file again: `medcycle labels schema add FILE` "
       "makes the next version.")
_guard(AnnotationRow, "annotations", "Add a new annotation (another round, or an adjudication) instead.")
_guard(AnnotationSetRow, "label sets", "Create a new label set: `medcycle labels set create ...`.")
_guard(AnnotationSetMemberRow, "label sets", "Create a new label set: `medcycle labels set create ...`.")


# -- reader qualification (migration 0012) -----------------------------------------------------------------
class ExamRow(Base):
    """A gold-standard set with pass thresholds: sat as an exam, or planted as honeypots (``purpose``).

    The gold annotations are a label set (immutable); the thresholds are minimums per metric of
    :mod:`medcycle.labels.grading`. A honeypot pool may ``guard`` an exam: readers whose last ``window``
    honeypots fall below its thresholds lose that exam's certification.
    """

    __tablename__ = "label_exams"

    name: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))  # exam, honeypot
    label_set_id: Mapped[str] = mapped_column(ForeignKey("annotation_sets.id"), index=True)
    schema_id: Mapped[str] = mapped_column(ForeignKey("label_schemas.id"))
    level: Mapped[str] = mapped_column(String(16))
    n_items: Mapped[int] = mapped_column(Integer)
    thresholds: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    negative_labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    valid_days: Mapped[int | None] = mapped_column(Integer, nullable=True)  # certification lifetime
    guards: Mapped[str | None] = mapped_column(String(NAME), nullable=True)  # honeypot pool: the exam it watches
    window: Mapped[int] = mapped_column(Integer, default=10)  # honeypot pool: judged over the last N
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="active")  # active, retired
    created_by: Mapped[str] = mapped_column(String(NAME))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExamAttemptRow(Base):
    """One sitting of an exam by a reader (``A-<id>``), read through a task of its own, graded when complete."""

    __tablename__ = "label_exam_attempts"
    __table_args__ = (Index("ix_label_exam_attempts_reader_exam", "reader", "exam"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    exam: Mapped[str] = mapped_column(ForeignKey("label_exams.name"))
    reader: Mapped[str] = mapped_column(String(NAME))
    task_id: Mapped[int] = mapped_column(ForeignKey("label_tasks.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="open")  # open, passed, failed, cancelled
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    grade: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # grading.Grade.to_dict()
    item_grades: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    failures: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(NAME))


class CertificationRow(Base):
    """Where a reader stands with an exam: active (until ``expires_at``), expired, revoked or failed."""

    __tablename__ = "label_certifications"
    __table_args__ = (Index("ix_label_certifications_state", "state", "expires_at"),)

    reader: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    exam: Mapped[str] = mapped_column(ForeignKey("label_exams.name"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("label_exam_attempts.id"), nullable=True)
    granted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_by: Mapped[str] = mapped_column(String(NAME))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HoneypotRow(Base):
    """A gold item planted in a reader's queue of a live task; graded silently once the reader submits it."""

    __tablename__ = "label_honeypots"
    __table_args__ = (Index("ix_label_honeypots_reader_state", "reader", "state"),)

    task_id: Mapped[int] = mapped_column(ForeignKey("label_tasks.id", ondelete="CASCADE"), primary_key=True)
    item_uid: Mapped[str] = mapped_column(String(UID), primary_key=True)
    reader: Mapped[str] = mapped_column(String(NAME))
    pool: Mapped[str] = mapped_column(ForeignKey("label_exams.name"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="planted")  # planted, scored
    planted_by: Mapped[str] = mapped_column(String(NAME))
    planted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    scored_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    grade: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # grading.ItemGrade.to_dict()


# -- active learning (migration 0012) ----------------------------------------------------------------------
class ActiveScoreRow(Base):
    """A cached per-item score (or feature vector) of one model version under one measure."""

    __tablename__ = "label_active_scores"

    model_version: Mapped[str] = mapped_column(String(128), primary_key=True)
    measure: Mapped[str] = mapped_column(String(128), primary_key=True)  # e.g. "entropy", "mc-dropout:bald:t=10"
    item_uid: Mapped[str] = mapped_column(String(UID), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    vector: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)  # core-set features
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ActiveBatchRow(Base):
    """A batch chosen by an active-learning strategy: what was picked, in rank order, why, and its task."""

    __tablename__ = "label_active_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True)  # none for random
    strategy: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    n_candidates: Mapped[int] = mapped_column(Integer)
    n_labelled: Mapped[int] = mapped_column(Integer, default=0)
    items: Mapped[list[str]] = mapped_column(JSON, default=list)
    scores: Mapped[list[float | None]] = mapped_column(JSON, default=list)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("label_tasks.id"), nullable=True, index=True)
    created_by: Mapped[str] = mapped_column(String(NAME))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
