"""The ranked register: every hypothesis with ICE, RICE, votes and the HiPPO's call side by side.

Ranking is by the chosen score, highest first, unscored last. Ties are broken by the other scores in a
fixed order, then by age (the older hypothesis first), so the same data always gives the same order::

    ice   → ICE, RICE, votes, id        rice  → RICE, ICE, votes, id        votes → votes, ICE, RICE, id
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medcycle.hypotheses.decisions import DecisionInfo, decision_of
from medcycle.hypotheses.inputs import ref_of
from medcycle.hypotheses.tables import HypothesisAnswerRow, HypothesisLinkRow, HypothesisRow
from medcycle.hypotheses.vocabulary import QUESTIONS, SortKey, Status, parse
from medcycle.hypotheses.votes import Tally, tallies

TIE_BREAKS: dict[SortKey, tuple[SortKey, ...]] = {
    SortKey.ICE: (SortKey.ICE, SortKey.RICE, SortKey.VOTES),
    SortKey.RICE: (SortKey.RICE, SortKey.ICE, SortKey.VOTES),
    SortKey.VOTES: (SortKey.VOTES, SortKey.ICE, SortKey.RICE),
}


@dataclass(frozen=True, slots=True)
class Summary:
    """One line of the register."""

    rank: int
    id: int
    title: str
    project: str
    owner: str
    status: Status
    status_reason: str | None
    ice: float | None
    rice: float | None
    votes: Tally
    decision: DecisionInfo | None
    answered: int
    links: int
    created_at: datetime
    updated_at: datetime

    @property
    def ref(self) -> str:
        return ref_of(self.id)

    def metric(self, key: SortKey) -> float | None:
        if key == SortKey.ICE:
            return self.ice
        if key == SortKey.RICE:
            return self.rice
        return float(self.votes.score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "id": self.id, "ref": self.ref, "title": self.title, "project": self.project,
            "owner": self.owner, "status": self.status.value, "status_reason": self.status_reason,
            "ice": self.ice, "rice": self.rice, "votes": self.votes.to_dict(),
            "decision": self.decision.to_dict() if self.decision else None,
            "answered": self.answered, "questions": len(QUESTIONS), "links": self.links,
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
        }


def _counts(session: Session, column: Any, ids: list[int]) -> dict[int, int]:
    stmt = select(column, func.count()).where(column.in_(ids)).group_by(column)
    return {int(h): int(n) for h, n in session.execute(stmt).all()}


def summarise(session: Session, rows: Iterable[HypothesisRow]) -> list[Summary]:
    """Summaries of ``rows`` in the order given (rank 0: not ranked)."""
    rows = list(rows)
    ids = [r.id for r in rows]
    tally = tallies(session, ids) if ids else {}
    answered = _counts(session, HypothesisAnswerRow.hypothesis_id, ids) if ids else {}
    linked = _counts(session, HypothesisLinkRow.hypothesis_id, ids) if ids else {}
    return [
        Summary(
            rank=0, id=r.id, title=r.title, project=r.project, owner=r.owner, status=Status(r.status),
            status_reason=r.status_reason, ice=r.ice_score, rice=r.rice_score, votes=tally.get(r.id, Tally()),
            decision=decision_of(r), answered=answered.get(r.id, 0), links=linked.get(r.id, 0),
            created_at=r.created_at, updated_at=r.updated_at,
        )
        for r in rows
    ]


def sort_key(summary: Summary, sort: SortKey) -> tuple[Any, ...]:
    """Highest first with unscored last, ties broken as the module docstring says."""
    parts: list[tuple[int, float]] = []
    for key in TIE_BREAKS[sort]:
        value = summary.metric(key)
        parts.append((1, 0.0) if value is None else (0, -value))
    return (*parts, summary.id)


def rank(
    session: Session,
    *,
    sort: SortKey | str = SortKey.ICE,
    statuses: Iterable[Status | str] | None = None,
    project: str | None = None,
    owner: str | None = None,
) -> list[Summary]:
    """The register ranked by ``sort`` (ice, rice or votes), optionally filtered; ranks start at 1."""
    key = parse(SortKey, sort, "sort key")
    stmt = select(HypothesisRow)
    wanted = sorted({parse(Status, s, "status").value for s in statuses or ()})
    if wanted:
        stmt = stmt.where(HypothesisRow.status.in_(wanted))
    if project:
        stmt = stmt.where(HypothesisRow.project == project.strip())
    if owner:
        stmt = stmt.where(HypothesisRow.owner == owner.strip())
    summaries = sorted(summarise(session, session.scalars(stmt)), key=lambda s: sort_key(s, key))
    return [replace(s, rank=i) for i, s in enumerate(summaries, start=1)]
