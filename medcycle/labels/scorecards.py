"""Reader scorecards: how each reader does against the gold standard, and how fast, over time.

A scorecard pools what is already stored — the item grades of exam sittings and of scored honeypots, and
the time of every submitted assignment — so it costs no mask reading. Per period (month, week or day):

- **exams**: the sittings finished in the period, how many passed, and their item grades pooled;
- **honeypots**: the honeypots scored in the period, pooled (sensitivity/specificity with Wilson intervals,
  kappa vs the reference, Dice, box F1 — whatever the pools' kinds allow; see :mod:`.grading`);
- **time**: studies (items) submitted in any task and the mean seconds per study where recorded.

Plus the reader's flags, certifications, every sitting, all honeypots pooled, and why a re-test is due
(expired, revoked or failed certification; expiry within 30 days). Honeypot items are never listed: a
reader who may see their own scorecard must not learn which items were honeypots.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.errors import ValidationFailed
from medcycle.labels import certifications, grading, honeypots, qualification, readers
from medcycle.labels.tables import AssignmentRow
from medcycle.store.base import utcnow

RETEST_WARNING_DAYS = 30


class Period(StrEnum):
    MONTH = "month"
    WEEK = "week"
    DAY = "day"


def period_start(at: datetime, period: Period) -> date:
    d = at.date()
    if period is Period.MONTH:
        return d.replace(day=1)
    if period is Period.WEEK:
        return d - timedelta(days=d.weekday())
    return d


@dataclass(frozen=True, slots=True)
class PeriodScores:
    start: date
    sittings: int
    passed: int
    exams: grading.Grade | None
    honeypots: grading.Grade | None
    studies: int
    seconds_per_study: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "sittings": self.sittings, "passed": self.passed,
                "exams": self.exams.to_dict() if self.exams else None,
                "honeypots": self.honeypots.to_dict() if self.honeypots else None, "studies": self.studies,
                "seconds_per_study": self.seconds_per_study}


@dataclass(frozen=True, slots=True)
class Scorecard:
    reader: str
    qualified: bool
    senior: bool
    certification: str | None
    certifications: tuple[certifications.CertificationInfo, ...]
    attempts: tuple[qualification.AttemptInfo, ...]
    honeypots: grading.Grade | None
    honeypots_pending: int
    periods: tuple[PeriodScores, ...]
    retest: tuple[str, ...]
    period: Period

    def to_dict(self) -> dict[str, Any]:
        return {"reader": self.reader, "qualified": self.qualified, "senior": self.senior,
                "certification": self.certification, "certifications": [c.to_dict() for c in self.certifications],
                "attempts": [a.to_dict() for a in self.attempts],
                "honeypots": self.honeypots.to_dict() if self.honeypots else None,
                "honeypots_pending": self.honeypots_pending, "period": self.period.value,
                "periods": [p.to_dict() for p in self.periods], "retest": list(self.retest)}


def _pool(grades: Iterable[grading.ItemGrade]) -> grading.Grade | None:
    items = list(grades)
    return grading.Grade.pool(items) if items else None


def scorecard(session: Session, reader: str, *, period: str = Period.MONTH, since: datetime | None = None,
              now: datetime | None = None) -> Scorecard:
    """One reader's scorecard (``since`` limits the periods, not the certifications)."""
    try:
        per = Period(period)
    except ValueError:
        raise ValidationFailed(f"{period!r} is not a period", hint="Use month, week or day.") from None
    info = readers.get_reader(session, reader)
    now = now or utcnow()
    certs = tuple(certifications.certifications(session, reader=reader))
    attempts = tuple(qualification.list_attempts(session, reader=reader))
    pots = honeypots.results(session, reader=reader)
    scored = [h for h in pots if h.grade is not None and h.scored_at is not None]

    sittings: dict[date, list[qualification.AttemptInfo]] = defaultdict(list)
    for a in attempts:
        if a.finished_at is not None and a.passed is not None and (since is None or a.finished_at >= since):
            sittings[period_start(a.finished_at, per)].append(a)
    pot_periods: dict[date, list[grading.ItemGrade]] = defaultdict(list)
    for h in scored:
        assert h.scored_at is not None and h.grade is not None
        if since is None or h.scored_at >= since:
            pot_periods[period_start(h.scored_at, per)].append(h.grade)
    times: dict[date, list[float | None]] = defaultdict(list)
    stmt = select(AssignmentRow.submitted_at, AssignmentRow.seconds).where(
        AssignmentRow.reader == reader, AssignmentRow.state == "submitted", AssignmentRow.submitted_at.is_not(None))
    if since is not None:
        stmt = stmt.where(AssignmentRow.submitted_at >= since)
    for at, seconds in session.execute(stmt):
        if at is not None:
            times[period_start(at, per)].append(seconds)

    periods = []
    for start in sorted(set(sittings) | set(pot_periods) | set(times)):
        done = sittings.get(start, [])
        known = [s for s in times.get(start, []) if s is not None]
        periods.append(PeriodScores(start, len(done), sum(1 for a in done if a.passed),
                                    _pool(g for a in done for g in a.item_grades), _pool(pot_periods.get(start, [])),
                                    len(times.get(start, [])), sum(known) / len(known) if known else None))
    retest = []
    for c in certs:
        if c.state is not certifications.CertState.ACTIVE:
            retest.append(f"{c.exam}: {c.state.value}" + (f" ({c.reason})" if c.reason else ""))
        elif c.expires_at is not None and c.expires_at <= now + timedelta(days=RETEST_WARNING_DAYS):
            retest.append(f"{c.exam}: expires {c.expires_at.date().isoformat()}")
    return Scorecard(reader, info.qualified, info.senior, info.certification, certs, attempts,
                     _pool(h.grade for h in scored if h.grade is not None), len(pots) - len(scored),
                     tuple(periods), tuple(retest), per)


def scorecards(session: Session, *, period: str = Period.MONTH, since: datetime | None = None,
               include_models: bool = False) -> list[Scorecard]:
    """Every registered reader's scorecard (models left out unless asked for)."""
    return [scorecard(session, r.name, period=period, since=since) for r in readers.list_readers(session)
            if include_models or not r.name.startswith("model:")]
