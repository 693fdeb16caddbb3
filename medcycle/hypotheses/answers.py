"""Answers to the business and technical questions of a hypothesis (one per question, replaceable)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.errors import NotFound
from medcycle.hypotheses import inputs
from medcycle.hypotheses.inputs import ref_of
from medcycle.hypotheses.lookup import get_hypothesis, record_change
from medcycle.hypotheses.tables import HypothesisAnswerRow
from medcycle.hypotheses.vocabulary import QUESTIONS, Confidence, Question, parse, question
from medcycle.store.base import utcnow


@dataclass(frozen=True, slots=True)
class Answer:
    """A question of the catalogue with the team's answer (``answer`` is None while unanswered)."""

    question: Question
    answer: str | None
    confidence: str | None
    notes: str | None
    by: str | None
    at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.question.to_dict(), "answer": self.answer, "confidence": self.confidence,
                "notes": self.notes, "by": self.by, "at": self.at.isoformat() if self.at else None}


def answer(
    session: Session,
    ref: str | int,
    key: str,
    text: str,
    *,
    confidence: Confidence | str | None = None,
    notes: str | None = None,
    actor: str = "system",
    via: str = "library",
) -> Answer:
    """Answer (or re-answer) question ``key`` of a hypothesis."""
    asked = question(key)
    actor = inputs.name(actor, "actor")
    answer_text = inputs.required_text(text, "answer")
    level = parse(Confidence, confidence, "confidence level").value if confidence else None
    note = inputs.text(notes, "notes")
    row = get_hypothesis(session, ref, for_update=True)
    existing = session.get(HypothesisAnswerRow, (row.id, asked.key))
    now = utcnow()
    if existing is None:
        session.add(HypothesisAnswerRow(hypothesis_id=row.id, question=asked.key, answer=answer_text,
                                        confidence=level, notes=note, answered_by=actor, answered_at=now))
    else:
        existing.answer, existing.confidence, existing.notes = answer_text, level, note
        existing.answered_by, existing.answered_at = actor, now
    record_change(session, row, actor, "answer", via=via, question=asked.key, confidence=level,
                  replaced=existing is not None)
    return Answer(asked, answer_text, level, note, actor, now)


def clear_answer(session: Session, ref: str | int, key: str, *, actor: str = "system", via: str = "library") -> None:
    """Remove the answer to question ``key``."""
    asked = question(key)
    actor = inputs.name(actor, "actor")
    row = get_hypothesis(session, ref, for_update=True)
    existing = session.get(HypothesisAnswerRow, (row.id, asked.key))
    if existing is None:
        raise NotFound(f"{ref_of(row.id)} has no answer to {asked.key!r}",
                       hint=f"See its answers with `medcycle hypothesis show {ref_of(row.id)}`.")
    session.delete(existing)
    record_change(session, row, actor, "answer.clear", via=via, question=asked.key)


def answers(session: Session, hypothesis_id: int) -> list[Answer]:
    """Every question of the catalogue, in catalogue order, with its answer if there is one."""
    given = {a.question: a for a in session.scalars(
        select(HypothesisAnswerRow).where(HypothesisAnswerRow.hypothesis_id == hypothesis_id))}
    out = []
    for q in QUESTIONS:
        a = given.get(q.key)
        out.append(Answer(q, a.answer, a.confidence, a.notes, a.answered_by, a.answered_at) if a
                   else Answer(q, None, None, None, None, None))
    return out
