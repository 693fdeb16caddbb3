"""Everything known about one hypothesis: questions and answers, scores, votes, decision, history, links."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from medcycle.hypotheses.answers import Answer, answers
from medcycle.hypotheses.lifecycle import TRANSITIONS, HistoryEntry, history
from medcycle.hypotheses.links import Link, links
from medcycle.hypotheses.lookup import get_hypothesis
from medcycle.hypotheses.ranking import Summary, summarise
from medcycle.hypotheses.scoring import IceScore, RiceScore, ice_of, rice_of
from medcycle.hypotheses.vocabulary import Status
from medcycle.hypotheses.votes import Vote, votes


@dataclass(frozen=True, slots=True)
class Detail:
    summary: Summary
    description: str | None
    created_by: str
    ice: IceScore | None
    rice: RiceScore | None
    answers: list[Answer]
    votes: list[Vote]
    history: list[HistoryEntry]
    links: list[Link]

    @property
    def next_statuses(self) -> list[Status]:
        """Where the status can go from here (a closed hypothesis only through ``reopen``)."""
        return sorted(TRANSITIONS[self.summary.status])

    def to_dict(self) -> dict[str, Any]:
        out = self.summary.to_dict()
        out.pop("rank")
        return out | {
            "description": self.description,
            "created_by": self.created_by,
            "scores": {"ice": self.ice.to_dict() if self.ice else None,
                       "rice": self.rice.to_dict() if self.rice else None},
            "answers": [a.to_dict() for a in self.answers],
            "votes": self.summary.votes.to_dict() | {"cast": [v.to_dict() for v in self.votes]},
            "history": [h.to_dict() for h in self.history],
            "links": [link.to_dict() for link in self.links],
        }


def show(session: Session, ref: str | int) -> Detail:
    """The full record of the hypothesis ``ref`` names."""
    row = get_hypothesis(session, ref)
    return Detail(
        summary=summarise(session, [row])[0],
        description=row.description,
        created_by=row.created_by,
        ice=ice_of(row),
        rice=rice_of(row),
        answers=answers(session, row.id),
        votes=votes(session, row.id),
        history=history(session, row.id),
        links=links(session, row.id),
    )
