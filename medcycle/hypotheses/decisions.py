"""The HiPPO's call: go, no-go or defer, who made it, a note, and when.

The latest call is kept on the hypothesis (shown beside ICE, RICE and the votes); every call is also
appended to its history. A killed hypothesis takes no calls until it is reopened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from medcycle.errors import Conflict
from medcycle.hypotheses import inputs
from medcycle.hypotheses.inputs import ref_of
from medcycle.hypotheses.lifecycle import append_history
from medcycle.hypotheses.lookup import get_hypothesis, record_change
from medcycle.hypotheses.tables import HypothesisRow
from medcycle.hypotheses.vocabulary import Decision, Status, parse
from medcycle.store.base import utcnow


@dataclass(frozen=True, slots=True)
class DecisionInfo:
    decision: Decision
    by: str
    note: str | None
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision.value, "by": self.by, "note": self.note, "at": self.at.isoformat()}


def decision_of(row: HypothesisRow) -> DecisionInfo | None:
    if row.decision is None or row.decision_by is None or row.decision_at is None:
        return None
    return DecisionInfo(Decision(row.decision), row.decision_by, row.decision_note, row.decision_at)


def decide(
    session: Session,
    ref: str | int,
    decision: Decision | str,
    *,
    by: str | None = None,
    note: str | None = None,
    actor: str = "system",
    via: str = "library",
) -> DecisionInfo:
    """Record the HiPPO's call; ``by`` (who made it) defaults to the actor who records it."""
    chosen = parse(Decision, decision, "decision")
    actor = inputs.name(actor, "actor")
    who = inputs.name(by or actor, "decision maker")
    why = inputs.text(note, "note")
    row = get_hypothesis(session, ref, for_update=True)
    if row.status == Status.KILLED.value:
        raise Conflict(f"{ref_of(row.id)} is killed; it takes no decisions",
                       hint=f"Reopen it first: `medcycle hypothesis reopen {ref_of(row.id)} --reason TEXT`.")
    previous = row.decision
    now = utcnow()
    row.decision, row.decision_by, row.decision_note, row.decision_at = chosen.value, who, why, now
    append_history(session, row, "decision", previous, chosen.value, why, who)
    record_change(session, row, actor, "decide", via=via, decision=chosen.value, by=who, previous=previous)
    return DecisionInfo(chosen, who, why, now)
