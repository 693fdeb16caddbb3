"""Team votes: one per user per hypothesis (up or down, with a comment), changeable and retractable.

Votes are taken while a hypothesis is open (proposed or exploring); a closed one keeps its votes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from medcycle.errors import Conflict, NotFound
from medcycle.hypotheses import inputs
from medcycle.hypotheses.inputs import ref_of
from medcycle.hypotheses.lifecycle import OPEN
from medcycle.hypotheses.lookup import get_hypothesis, record_change
from medcycle.hypotheses.tables import HypothesisRow, HypothesisVoteRow
from medcycle.hypotheses.vocabulary import VOTE_POINTS, Status, VoteValue, parse
from medcycle.store.base import utcnow


@dataclass(frozen=True, slots=True)
class Tally:
    """The votes on one hypothesis: ``score`` = up - down."""

    up: int = 0
    down: int = 0

    @property
    def score(self) -> int:
        return self.up - self.down

    @property
    def count(self) -> int:
        return self.up + self.down

    def to_dict(self) -> dict[str, int]:
        return {"score": self.score, "up": self.up, "down": self.down}


@dataclass(frozen=True, slots=True)
class Vote:
    voter: str
    value: VoteValue
    comment: str | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"voter": self.voter, "value": self.value.value, "comment": self.comment,
                "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat()}


def _value(points: int) -> VoteValue:
    return VoteValue.UP if points > 0 else VoteValue.DOWN


def _open(row: HypothesisRow) -> None:
    if Status(row.status) not in OPEN:
        ref = ref_of(row.id)
        raise Conflict(f"{ref} is {row.status}; votes are closed",
                       hint=f"Votes are taken while a hypothesis is open; reopen it with "
                            f"`medcycle hypothesis reopen {ref} --reason TEXT`.")


def vote(
    session: Session,
    ref: str | int,
    value: VoteValue | str,
    *,
    comment: str | None = None,
    voter: str | None = None,
    actor: str = "system",
    via: str = "library",
) -> Vote:
    """Cast or change ``voter``'s vote (the voter defaults to the actor)."""
    chosen = parse(VoteValue, value, "vote")
    actor = inputs.name(actor, "actor")
    who = inputs.name(voter or actor, "voter")
    note = inputs.text(comment, "comment")
    row = get_hypothesis(session, ref, for_update=True)
    _open(row)
    existing = session.get(HypothesisVoteRow, (row.id, who))
    now = utcnow()
    previous = _value(existing.value).value if existing is not None else None
    if existing is None:
        existing = HypothesisVoteRow(hypothesis_id=row.id, voter=who, value=VOTE_POINTS[chosen], comment=note,
                                     created_at=now, updated_at=now)
        session.add(existing)
    else:
        existing.value, existing.comment, existing.updated_at = VOTE_POINTS[chosen], note, now
    record_change(session, row, actor, "vote", via=via, voter=who, value=chosen.value, previous=previous)
    return Vote(who, chosen, note, existing.created_at, now)


def retract(
    session: Session, ref: str | int, *, voter: str | None = None, actor: str = "system", via: str = "library"
) -> None:
    """Withdraw ``voter``'s vote (the voter defaults to the actor)."""
    actor = inputs.name(actor, "actor")
    who = inputs.name(voter or actor, "voter")
    row = get_hypothesis(session, ref, for_update=True)
    _open(row)
    existing = session.get(HypothesisVoteRow, (row.id, who))
    if existing is None:
        raise NotFound(f"{who} has not voted on {ref_of(row.id)}",
                       hint=f"See the votes with `medcycle hypothesis show {ref_of(row.id)}`.")
    session.delete(existing)
    record_change(session, row, actor, "vote.retract", via=via, voter=who)


def votes(session: Session, hypothesis_id: int) -> list[Vote]:
    """The votes on one hypothesis, oldest first."""
    rows = session.scalars(select(HypothesisVoteRow).where(HypothesisVoteRow.hypothesis_id == hypothesis_id)
                           .order_by(HypothesisVoteRow.created_at, HypothesisVoteRow.voter))
    return [Vote(r.voter, _value(r.value), r.comment, r.created_at, r.updated_at) for r in rows]


def tallies(session: Session, hypothesis_ids: list[int] | None = None) -> dict[int, Tally]:
    """Up and down counts per hypothesis (only those with votes appear)."""
    up = func.sum(case((HypothesisVoteRow.value > 0, 1), else_=0))
    down = func.sum(case((HypothesisVoteRow.value < 0, 1), else_=0))
    stmt = select(HypothesisVoteRow.hypothesis_id, up, down).group_by(HypothesisVoteRow.hypothesis_id)
    if hypothesis_ids is not None:
        stmt = stmt.where(HypothesisVoteRow.hypothesis_id.in_(hypothesis_ids))
    return {int(h): Tally(int(u or 0), int(d or 0)) for h, u, d in session.execute(stmt).all()}
