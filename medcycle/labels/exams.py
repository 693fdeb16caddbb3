"""Gold-standard sets with pass thresholds: exams readers sit, and honeypot pools planted in live queues.

An exam is a name, a label set (the gold annotations: immutable, content-addressed, every item of it —
annotated or not — is part of the exam, so negative items count) and pass thresholds, minimums over the
metrics of :mod:`.grading` (``sensitivity=0.85``, ``dice=0.8`` …). ``negative_labels`` names the classes that
mean "nothing found" (``normal``), so that class-label exams have a sensitivity and a specificity.
``valid_days`` is how long a pass certifies a reader (re-testing after that); without it, until revoked.

A honeypot pool is the same thing with ``purpose=honeypot``: its items are never sat as an exam, they are
planted one by one into live queues (:mod:`.honeypots`). A pool may ``guard`` an exam: a reader whose last
``window`` honeypots of the pool fall below the pool's thresholds loses that exam's certification. Keep a
pool's items apart from the exam's, or readers will recognise them.

Definitions do not change once made (a different threshold is a new exam name); an exam can be retired,
which stops new sittings and plantings but keeps every result.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import Conflict, NotFound, UsageError, ValidationFailed
from medcycle.labels import grading, sets
from medcycle.labels.model import Annotation, Kind, Level
from medcycle.labels.schemas import SchemaInfo
from medcycle.labels.tables import ExamRow, LabelSchemaRow
from medcycle.objects.base import ObjectStore
from medcycle.store.base import utcnow

EXAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TARGET_KIND = "label_exam"


class Purpose(StrEnum):
    EXAM = "exam"  # sat by a reader through a task of its own
    HONEYPOT = "honeypot"  # planted, item by item, in live queues


@dataclass(frozen=True, slots=True)
class ExamInfo:
    name: str
    purpose: Purpose
    label_set: str
    schema: str  # NAME@N
    schema_id: str
    level: Level
    items: int
    thresholds: dict[str, float]
    negative_labels: tuple[str, ...]
    valid_days: int | None
    guards: str | None
    window: int
    description: str | None
    state: str
    created_by: str
    created_at: datetime
    kinds: frozenset[Kind] = frozenset()  # the kinds the schema allows

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "purpose": self.purpose.value, "label_set": self.label_set, "schema": self.schema,
                "schema_id": self.schema_id, "level": self.level.value, "items": self.items,
                "thresholds": dict(self.thresholds), "negative_labels": list(self.negative_labels),
                "valid_days": self.valid_days, "guards": self.guards, "window": self.window,
                "description": self.description, "state": self.state, "created_by": self.created_by,
                "created_at": self.created_at.isoformat()}

    @classmethod
    def of(cls, session: Session, row: ExamRow) -> ExamInfo:
        schema = SchemaInfo.of(session.get_one(LabelSchemaRow, row.schema_id))
        return cls(row.name, Purpose(row.purpose), row.label_set_id, schema.ref, schema.id, Level(row.level),
                   row.n_items, dict(row.thresholds or {}), tuple(row.negative_labels or ()), row.valid_days,
                   row.guards, row.window, row.description, row.state, row.created_by, row.created_at,
                   schema.kinds)


def check_name(name: str) -> str:
    if not EXAM_RE.match(name or ""):
        raise UsageError(f"{name!r} is not a valid exam name",
                         hint="Use letters, digits, '.', '_' and '-' (at most 64), e.g. chest-xr-2026.")
    return name


def parse_thresholds(values: Sequence[str]) -> dict[str, float]:
    """``["sensitivity=0.85", "dice=0.8"]`` → ``{"sensitivity": 0.85, "dice": 0.8}`` (command-line form)."""
    out: dict[str, float] = {}
    for v in values:
        name, sep, number = v.partition("=")
        try:
            out[name.strip()] = float(number)
        except ValueError:
            raise UsageError(f"{v!r} is not METRIC=VALUE", hint="e.g. --pass sensitivity=0.85") from None
        if not sep:
            raise UsageError(f"{v!r} is not METRIC=VALUE", hint="e.g. --pass sensitivity=0.85")
    return out


def create_exam(
    session: Session, name: str, *, label_set: str, thresholds: Mapping[str, float], purpose: Purpose | str = "exam",
    negative_labels: Sequence[str] = (), valid_days: int | None = None, guards: str | None = None, window: int = 10,
    description: str | None = None, actor: str = "system", via: str = "library",
) -> ExamInfo:
    """Define an exam (or a honeypot pool) over a gold label set.

    Raises:
        Conflict: the name is taken.
        ValidationFailed: a threshold the schema cannot measure, a negative label outside the schema, a
            guarded exam that does not exist or is not an exam, non-positive ``valid_days``/``window``.
    """
    check_name(name)
    try:
        kind = Purpose(purpose)
    except ValueError:
        raise UsageError(f"{purpose!r} is not exam or honeypot", hint="Pass --purpose exam or honeypot.") from None
    if session.get(ExamRow, name) is not None:
        raise Conflict(f"exam {name!r} already exists",
                       hint="Definitions do not change: choose a new name (e.g. with a year or version).")
    set_row = sets.resolve_set_row(session, label_set)
    schema = SchemaInfo.of(session.get_one(LabelSchemaRow, set_row.schema_id))
    negatives = list(dict.fromkeys(n.strip() for n in negative_labels if n.strip()))
    unknown = [n for n in negatives if n not in schema.class_names]
    if unknown:
        raise ValidationFailed(f"negative label(s) {', '.join(unknown)} are not classes of {schema.ref}",
                               hint=f"Classes: {', '.join(schema.class_names)}.")
    checked = grading.check_thresholds(thresholds, schema.kinds, negatives)
    if valid_days is not None and valid_days < 1:
        raise ValidationFailed(f"valid days {valid_days} is not positive", hint="e.g. --valid-days 365, or leave out.")
    if window < 1:
        raise ValidationFailed(f"window {window} is not positive", hint="e.g. --window 10.")
    if guards is not None:
        if kind is not Purpose.HONEYPOT:
            raise ValidationFailed("only a honeypot pool guards an exam", hint="Drop --guards, or use --purpose "
                                   "honeypot.")
        guarded = get_exam_row(session, guards)
        if guarded.purpose != Purpose.EXAM:
            raise ValidationFailed(f"{guards!r} is a honeypot pool, not an exam", hint="Guard an exam.")
    now = utcnow()
    row = ExamRow(name=name, purpose=kind.value, label_set_id=set_row.id, schema_id=schema.id,
                  level=schema.level.value, n_items=set_row.n_items, thresholds=checked, negative_labels=negatives,
                  valid_days=valid_days, guards=guards, window=window, description=(description or "").strip() or None,
                  state="active", created_by=actor, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    audit.record(session, actor, f"labels.{kind.value}.create", target_kind=TARGET_KIND, target_id=name, via=via,
                 label_set=set_row.id, thresholds=checked, items=set_row.n_items)
    return ExamInfo.of(session, row)


def get_exam_row(session: Session, name: str) -> ExamRow:
    row = session.get(ExamRow, name)
    if row is None:
        raise NotFound(f"exam {name!r} does not exist", hint="List exams with `medcycle labels exam list`.")
    return row


def get_exam(session: Session, name: str) -> ExamInfo:
    return ExamInfo.of(session, get_exam_row(session, name))


def list_exams(session: Session, *, purpose: str | None = None, state: str | None = None) -> list[ExamInfo]:
    stmt = select(ExamRow).order_by(ExamRow.name)
    if purpose is not None:
        stmt = stmt.where(ExamRow.purpose == Purpose(purpose).value)
    if state is not None:
        stmt = stmt.where(ExamRow.state == state)
    return [ExamInfo.of(session, r) for r in session.scalars(stmt)]


def retire_exam(session: Session, name: str, *, actor: str = "system", via: str = "library") -> ExamInfo:
    """No new sittings or plantings; results and certifications stay as they are."""
    row = get_exam_row(session, name)
    if row.state != "retired":
        row.state, row.updated_at = "retired", utcnow()
        audit.record(session, actor, "labels.exam.retire", target_kind=TARGET_KIND, target_id=name, via=via)
    return ExamInfo.of(session, row)


def _named(purpose: str) -> str:
    return "an exam" if purpose == Purpose.EXAM else "a honeypot pool"


def require_active(row: ExamRow, purpose: Purpose) -> None:
    if row.purpose != purpose.value:
        raise UsageError(f"{row.name!r} is {_named(row.purpose)}, not {_named(purpose)}",
                         hint="Exams are sat; honeypot pools are planted (`medcycle labels honeypot plant`).")
    if row.state != "active":
        raise Conflict(f"{row.purpose} {row.name!r} is retired",
                       hint="Use an active one (`medcycle labels exam list`).")


@dataclass(frozen=True, slots=True)
class Gold:
    """The reference of an exam: every item (annotated or not) with its gold annotations."""

    exam: ExamInfo
    items: tuple[str, ...]
    annotations: dict[str, list[Annotation]]

    def of(self, item: str) -> list[Annotation]:
        return self.annotations.get(item, [])

    def reference(self, items: Sequence[str] | None = None) -> dict[str, list[Annotation]]:
        return {i: self.of(i) for i in (self.items if items is None else items)}


def load_gold(session: Session, objects: ObjectStore, exam: str | ExamRow) -> Gold:
    """The gold annotations, read from the label set's verified body."""
    row = exam if isinstance(exam, ExamRow) else get_exam_row(session, exam)
    resolved = sets.resolve_label_set(session, objects, row.label_set_id)
    by_item: dict[str, list[Annotation]] = defaultdict(list)
    for a in resolved.annotations:
        by_item[a.image].append(a)
    return Gold(ExamInfo.of(session, row), tuple(resolved.items), dict(by_item))
