"""Certifications: where each reader stands with each exam, and the ``qualified`` flag that follows from it.

Assignment is gated by one flag, ``label_readers.qualified`` (:func:`medcycle.labels.tasks.create_task` assigns
only qualified readers; :mod:`medcycle.labels.readers`). This module keeps that flag in step with the exams:

- passing an exam makes the certification ``active`` (until ``valid_days`` later, if the exam says so) and the
  reader qualified, with the certifications written in the reader's ``certification`` text;
- failing one (a re-test counts: the latest sitting decides), its expiry, or a revocation (by an admin, or
  by a honeypot pool that guards the exam) leaves the certification ``failed``, ``expired`` or ``revoked``,
  and a reader left with no active certification is no longer qualified — so no new task assigns them
  until they pass a re-test.

The flag changes only on these events, never in a sweep over every reader: an admin who qualifies a reader
by hand (``labels reader set NAME --qualified``, e.g. someone certified elsewhere) is not overruled until that
reader's own certification changes. Expiry is applied by :func:`expire` (run by ``labels qualification
refresh`` and before active-learning batches become tasks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import NotFound
from medcycle.labels import readers
from medcycle.labels.exams import TARGET_KIND, get_exam_row
from medcycle.labels.tables import CertificationRow, ReaderRow
from medcycle.store.base import utcnow


class CertState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CertificationInfo:
    reader: str
    exam: str
    state: CertState
    attempt: str | None  # A-<id> that decided it
    granted_at: datetime | None
    expires_at: datetime | None
    reason: str | None
    updated_by: str
    updated_at: datetime

    def active_at(self, now: datetime) -> bool:
        return self.state is CertState.ACTIVE and (self.expires_at is None or self.expires_at > now)

    def to_dict(self) -> dict[str, Any]:
        return {"reader": self.reader, "exam": self.exam, "state": self.state.value, "attempt": self.attempt,
                "granted_at": self.granted_at.isoformat() if self.granted_at else None,
                "expires_at": self.expires_at.isoformat() if self.expires_at else None, "reason": self.reason,
                "updated_by": self.updated_by, "updated_at": self.updated_at.isoformat()}

    @classmethod
    def of(cls, row: CertificationRow) -> CertificationInfo:
        return cls(row.reader, row.exam, CertState(row.state), f"A-{row.attempt_id}" if row.attempt_id else None,
                   row.granted_at, row.expires_at, row.reason, row.updated_by, row.updated_at)


def certifications(session: Session, *, reader: str | None = None, exam: str | None = None,
                   state: str | None = None) -> list[CertificationInfo]:
    stmt = select(CertificationRow).order_by(CertificationRow.reader, CertificationRow.exam)
    if reader is not None:
        stmt = stmt.where(CertificationRow.reader == reader)
    if exam is not None:
        stmt = stmt.where(CertificationRow.exam == exam)
    if state is not None:
        stmt = stmt.where(CertificationRow.state == CertState(state).value)
    return [CertificationInfo.of(r) for r in session.scalars(stmt)]


def sync_reader(session: Session, reader: str, *, now: datetime | None = None, actor: str = "system",
                via: str = "library") -> readers.ReaderInfo:
    """Set ``qualified`` and the certification text from the reader's active certifications."""
    now = now or utcnow()
    active = [c for c in certifications(session, reader=reader) if c.active_at(now)]
    text = ", ".join(f"{c.exam} until {c.expires_at.date().isoformat()}" if c.expires_at else c.exam
                     for c in active)
    if len(text) > 128:
        text = text[:125] + "..."
    return readers.set_reader(session, reader, qualified=bool(active), certification=text, actor=actor, via=via)


def record(
    session: Session, reader: str, exam: str, state: CertState, *, attempt_id: int | None = None,
    granted_at: datetime | None = None, expires_at: datetime | None = None, reason: str | None = None,
    actor: str = "system", via: str = "library",
) -> CertificationInfo:
    """Write where ``reader`` stands with ``exam`` and bring their ``qualified`` flag in step."""
    row = session.get(CertificationRow, (reader, exam))
    now = utcnow()
    if row is None:
        row = CertificationRow(reader=reader, exam=exam, state=state.value, updated_by=actor, updated_at=now)
        session.add(row)
    row.state, row.reason, row.updated_by, row.updated_at = state.value, reason, actor, now
    if attempt_id is not None:
        row.attempt_id = attempt_id
    if state is CertState.ACTIVE:
        row.granted_at, row.expires_at = granted_at or now, expires_at
    session.flush()
    audit.record(session, actor, f"labels.certification.{state.value}", target_kind=TARGET_KIND, target_id=exam,
                 via=via, reader=reader, reason=reason,
                 expires_at=expires_at.isoformat() if expires_at else None)
    sync_reader(session, reader, actor=actor, via=via)
    return CertificationInfo.of(row)


def grant(session: Session, reader: str, exam: str, *, attempt_id: int, at: datetime, actor: str = "system",
          via: str = "library") -> CertificationInfo:
    """A passed sitting: active until the exam's ``valid_days`` after ``at``."""
    days = get_exam_row(session, exam).valid_days
    return record(session, reader, exam, CertState.ACTIVE, attempt_id=attempt_id, granted_at=at,
                  expires_at=at + timedelta(days=days) if days else None, actor=actor, via=via)


def revoke(session: Session, reader: str, exam: str, *, reason: str, actor: str = "system",
           via: str = "library") -> CertificationInfo:
    """Withdraw an active certification (the reader must pass a re-test to be certified again)."""
    row = session.get(CertificationRow, (reader, exam))
    if row is None or row.state != CertState.ACTIVE.value:
        raise NotFound(f"{reader} holds no active certification for {exam!r}",
                       hint=f"See `medcycle labels qualification status --reader {reader}`.")
    return record(session, reader, exam, CertState.REVOKED, reason=reason.strip() or "revoked", actor=actor, via=via)


def expire(session: Session, *, now: datetime | None = None, actor: str = "system",
           via: str = "library") -> list[CertificationInfo]:
    """Active certifications past their expiry become ``expired`` (their readers lose ``qualified``)."""
    now = now or utcnow()
    due = list(session.scalars(select(CertificationRow).where(
        CertificationRow.state == CertState.ACTIVE.value, CertificationRow.expires_at.is_not(None),
        CertificationRow.expires_at <= now)))
    return [record(session, r.reader, r.exam, CertState.EXPIRED,
                   reason=f"expired {r.expires_at.date().isoformat() if r.expires_at else ''}; re-test required",
                   actor=actor, via=via) for r in due]


def retest_due(session: Session, *, within_days: int = 30, now: datetime | None = None,
               exams: Sequence[str] | None = None) -> list[CertificationInfo]:
    """Certifications that need a re-test: expired, revoked or failed, or active but expiring within N days."""
    now = now or utcnow()
    soon = now + timedelta(days=within_days)
    out = []
    for c in certifications(session):
        if exams is not None and c.exam not in exams:
            continue
        if c.state is not CertState.ACTIVE or (c.expires_at is not None and c.expires_at <= soon):
            out.append(c)
    return out


def is_registered(session: Session, reader: str) -> bool:
    return session.get(ReaderRow, reader) is not None
