"""Readers: who may be assigned items (``qualified``) and who may resolve adjudications (``senior``).

A reader is named like the user who reads (``dr-ivanova``) or, for pseudo-labels, ``model:<version>``.
Passing, failing, expiring or losing an exam certification sets ``qualified`` (:mod:`.certifications`); an
admin can still set the flags by hand. Assignment and adjudication only read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import NotFound, UsageError
from medcycle.labels.tables import ReaderRow
from medcycle.store.base import utcnow

READER_RE = re.compile(r"^(model:[A-Za-z0-9][A-Za-z0-9._@+-]{0,56}|[a-z][a-z0-9._-]{1,63})$")


def check_reader(name: str) -> str:
    if not READER_RE.match(name or ""):
        raise UsageError(f"{name!r} is not a valid reader name",
                         hint="Use the reader's user name (lowercase letters, digits, '.', '_', '-') "
                         "or model:<version> for a model.")
    return name


@dataclass(frozen=True, slots=True)
class ReaderInfo:
    name: str
    qualified: bool
    senior: bool
    certification: str | None
    note: str | None
    updated_by: str
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "qualified": self.qualified, "senior": self.senior,
                "certification": self.certification, "note": self.note, "updated_by": self.updated_by,
                "updated_at": self.updated_at.isoformat()}

    @classmethod
    def of(cls, row: ReaderRow) -> ReaderInfo:
        return cls(row.name, bool(row.qualified), bool(row.senior), row.certification, row.note, row.updated_by,
                   row.updated_at)


def set_reader(
    session: Session, name: str, *, qualified: bool | None = None, senior: bool | None = None,
    certification: str | None = None, note: str | None = None, actor: str = "system", via: str = "library",
) -> ReaderInfo:
    """Register a reader or change their flags (``None`` leaves a flag as it is; ``certification=""`` clears it)."""
    check_reader(name)
    row = session.get(ReaderRow, name)
    now = utcnow()
    if row is None:
        row = ReaderRow(name=name, qualified=False, senior=False, created_at=now, updated_by=actor, updated_at=now)
        session.add(row)
    changes: dict[str, Any] = {}
    for field, value in (("qualified", qualified), ("senior", senior)):
        if value is not None and getattr(row, field) != value:
            changes[field] = value
            setattr(row, field, value)
    for field, text in (("certification", certification), ("note", note)):
        if text is not None:
            cleaned = text.strip() or None
            if getattr(row, field) != cleaned:
                changes[field] = cleaned
                setattr(row, field, cleaned)
    row.updated_by, row.updated_at = actor, now
    session.flush()
    audit.record(session, actor, "labels.reader.set", target_kind="reader", target_id=name, via=via, **changes)
    return ReaderInfo.of(row)


def get_reader(session: Session, name: str) -> ReaderInfo:
    row = session.get(ReaderRow, name)
    if row is None:
        raise NotFound(f"reader {name!r} is not registered",
                       hint=f"Register them: `medcycle labels reader set {name} --qualified`.")
    return ReaderInfo.of(row)


def list_readers(session: Session, *, qualified: bool | None = None, senior: bool | None = None) -> list[ReaderInfo]:
    stmt = select(ReaderRow).order_by(ReaderRow.name)
    if qualified is not None:
        stmt = stmt.where(ReaderRow.qualified == qualified)
    if senior is not None:
        stmt = stmt.where(ReaderRow.senior == senior)
    return [ReaderInfo.of(r) for r in session.scalars(stmt)]


def is_senior(session: Session, name: str) -> bool:
    row = session.get(ReaderRow, name)
    return bool(row is not None and row.senior)
