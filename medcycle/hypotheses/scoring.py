"""ICE and RICE: the pure scores, their validation, and setting them on a hypothesis.

* **ICE** = Impact x Confidence x Ease, each a whole number from 1 to 10 (score 1-1000).
* **RICE** = Reach x Impact x Confidence% / Effort, as Intercom defined it: reach in people or studies per
  period (>= 0), impact on the scale 0.25 minimal, 0.5 low, 1 medium, 2 high, 3 massive, confidence in
  percent (1 to 100), effort in person-months (above 0).

Every problem in the inputs is reported at once, in one :class:`~medcycle.errors.ValidationFailed`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from medcycle.errors import UsageError, ValidationFailed
from medcycle.hypotheses import inputs
from medcycle.hypotheses.lookup import get_hypothesis, record_change
from medcycle.hypotheses.tables import HypothesisRow
from medcycle.store.base import utcnow

ICE_MIN, ICE_MAX = 1, 10
RICE_IMPACTS: dict[float, str] = {0.25: "minimal", 0.5: "low", 1.0: "medium", 2.0: "high", 3.0: "massive"}


@dataclass(frozen=True, slots=True)
class Ice:
    impact: int
    confidence: int
    ease: int

    @property
    def score(self) -> float:
        return float(self.impact * self.confidence * self.ease)

    def to_dict(self) -> dict[str, Any]:
        return {"impact": self.impact, "confidence": self.confidence, "ease": self.ease, "score": self.score}


@dataclass(frozen=True, slots=True)
class Rice:
    reach: float
    impact: float
    confidence: float  # percent
    effort: float

    @property
    def score(self) -> float:
        return self.reach * self.impact * (self.confidence / 100.0) / self.effort

    def to_dict(self) -> dict[str, Any]:
        return {"reach": self.reach, "impact": self.impact, "confidence": self.confidence, "effort": self.effort,
                "score": self.score}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _missing(fields: Mapping[str, object]) -> list[str]:
    return [f"{name} is missing" for name, value in fields.items() if value is None]


def ice(impact: float | None, confidence: float | None, ease: float | None) -> Ice:
    """A validated ICE score; each component a whole number from 1 to 10."""
    given = {"impact": impact, "confidence": confidence, "ease": ease}
    problems = _missing(given)
    values: dict[str, int] = {}
    for field, raw in given.items():
        if raw is None:
            continue
        number = _number(raw)
        if number is None or not number.is_integer() or not ICE_MIN <= number <= ICE_MAX:
            problems.append(f"{field} {raw!r} is not a whole number from {ICE_MIN} to {ICE_MAX}")
        else:
            values[field] = int(number)
    if problems:
        raise ValidationFailed(
            "invalid ICE score: " + "; ".join(problems),
            hint="Give impact, confidence and ease as whole numbers from 1 to 10, e.g. "
                 "`medcycle hypothesis score H-1 ice --impact 8 --confidence 5 --ease 6`.",
            problems=problems,
        )
    return Ice(**values)


def rice(reach: float | None, impact: float | None, confidence: float | None, effort: float | None) -> Rice:
    """A validated RICE score (see the module docstring for the ranges)."""
    given = {"reach": reach, "impact": impact, "confidence": confidence, "effort": effort}
    problems = _missing(given)
    numbers = {field: _number(raw) for field, raw in given.items()}
    for field, raw in given.items():
        if raw is not None and numbers[field] is None:
            problems.append(f"{field} {raw!r} is not a finite number")
    r, i, c, e = numbers["reach"], numbers["impact"], numbers["confidence"], numbers["effort"]
    if r is not None and r < 0:
        problems.append(f"reach {reach!r} is negative")
    if i is not None and i not in RICE_IMPACTS:
        scale = ", ".join(f"{k:g} {v}" for k, v in RICE_IMPACTS.items())
        problems.append(f"impact {impact!r} is not on the scale ({scale})")
    if c is not None and 0 < c < 1:
        problems.append(f"confidence {confidence!r} looks like a fraction; give a percentage (80 for 80%)")
    elif c is not None and not 1 <= c <= 100:
        problems.append(f"confidence {confidence!r} is not a percentage from 1 to 100")
    if e is not None and e <= 0:
        problems.append(f"effort {effort!r} is not above 0")
    if problems:
        raise ValidationFailed(
            "invalid RICE score: " + "; ".join(problems),
            hint="Reach >= 0 per period, impact one of 0.25/0.5/1/2/3, confidence in percent (80 for 80%), "
                 "effort > 0 person-months, e.g. "
                 "`medcycle hypothesis score H-1 rice --reach 400 --impact 2 --confidence 80 --effort 3`.",
            problems=problems,
        )
    assert r is not None and i is not None and c is not None and e is not None
    return Rice(reach=r, impact=i, confidence=c, effort=e)


@dataclass(frozen=True, slots=True)
class IceScore:
    """An ICE score as stored on a hypothesis, with who set it and when."""

    impact: int
    confidence: int
    ease: int
    score: float
    by: str | None
    at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {"impact": self.impact, "confidence": self.confidence, "ease": self.ease, "score": self.score,
                "by": self.by, "at": self.at.isoformat() if self.at else None}


@dataclass(frozen=True, slots=True)
class RiceScore:
    reach: float
    impact: float
    confidence: float
    effort: float
    score: float
    by: str | None
    at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {"reach": self.reach, "impact": self.impact, "confidence": self.confidence, "effort": self.effort,
                "score": self.score, "by": self.by, "at": self.at.isoformat() if self.at else None}


def ice_of(row: HypothesisRow) -> IceScore | None:
    if row.ice_impact is None or row.ice_confidence is None or row.ice_ease is None or row.ice_score is None:
        return None
    return IceScore(row.ice_impact, row.ice_confidence, row.ice_ease, row.ice_score, row.ice_by, row.ice_at)


def rice_of(row: HypothesisRow) -> RiceScore | None:
    if (row.rice_reach is None or row.rice_impact is None or row.rice_confidence is None or row.rice_effort is None
            or row.rice_score is None):
        return None
    return RiceScore(row.rice_reach, row.rice_impact, row.rice_confidence, row.rice_effort, row.rice_score,
                     row.rice_by, row.rice_at)


def score(
    session: Session,
    ref: str | int,
    *,
    ice: Ice | None = None,
    rice: Rice | None = None,
    actor: str = "system",
    via: str = "library",
) -> HypothesisRow:
    """Set the ICE and/or RICE score of a hypothesis (replacing the previous one; the audit log keeps it)."""
    if ice is None and rice is None:
        raise UsageError("no score given", hint="Give an ICE score, a RICE score or both.")
    actor = inputs.name(actor, "actor")
    row = get_hypothesis(session, ref, for_update=True)
    now = utcnow()
    details: dict[str, Any] = {}
    if ice is not None:
        row.ice_impact, row.ice_confidence, row.ice_ease = ice.impact, ice.confidence, ice.ease
        row.ice_score, row.ice_by, row.ice_at = ice.score, actor, now
        details["ice"] = ice.to_dict()
    if rice is not None:
        row.rice_reach, row.rice_impact, row.rice_confidence, row.rice_effort = (
            rice.reach, rice.impact, rice.confidence, rice.effort)
        row.rice_score, row.rice_by, row.rice_at = rice.score, actor, now
        details["rice"] = rice.to_dict()
    record_change(session, row, actor, "score", via=via, **details)
    return row


def format_score(value: float | None) -> str:
    """A score for people: ``240``, ``213.3``, ``4.27``; ``-`` when unscored."""
    if value is None:
        return "-"
    if float(value).is_integer():
        return str(int(value))
    magnitude = abs(value)
    return f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"
