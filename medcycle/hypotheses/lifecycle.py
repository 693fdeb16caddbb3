"""Status of a hypothesis: proposed → exploring → validated | killed, with the reason, and its history.

Allowed moves (anything else is a :class:`~medcycle.errors.Conflict` that names the way forward)::

    proposed ──explore──► exploring ──close validated──► validated
        │                     └────────close killed───────► killed
        └──────────────────────────────close killed───────► killed
    validated | killed ──reopen (reason)──► exploring

Closing (validated or killed) and reopening need a reason. Every change appends a row to
``hypothesis_history`` and an audit event. Closing and reopening are for an admin or the owner
(:func:`require_closer`); the local CLI acts with full rights.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.auth.roles import Permission, Principal
from medcycle.errors import Conflict, PermissionDenied
from medcycle.hypotheses import inputs
from medcycle.hypotheses.inputs import ref_of
from medcycle.hypotheses.lookup import get_hypothesis, record_change
from medcycle.hypotheses.tables import HypothesisHistoryRow, HypothesisRow
from medcycle.hypotheses.vocabulary import Status, Verdict, parse
from medcycle.store.base import utcnow

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PROPOSED: frozenset({Status.EXPLORING, Status.KILLED}),
    Status.EXPLORING: frozenset({Status.VALIDATED, Status.KILLED}),
    Status.VALIDATED: frozenset(),
    Status.KILLED: frozenset(),
}
CLOSED = frozenset({Status.VALIDATED, Status.KILLED})
OPEN = frozenset({Status.PROPOSED, Status.EXPLORING})


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One status change (``kind`` status) or HiPPO decision (``kind`` decision)."""

    kind: str
    from_value: str | None
    to_value: str
    note: str | None
    actor: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "from": self.from_value, "to": self.to_value, "note": self.note,
                "actor": self.actor, "at": self.at.isoformat()}


def append_history(
    session: Session, row: HypothesisRow, kind: str, from_value: str | None, to_value: str, note: str | None,
    actor: str,
) -> None:
    session.add(HypothesisHistoryRow(hypothesis_id=row.id, kind=kind, from_value=from_value, to_value=to_value,
                                     note=note, actor=actor, at=utcnow()))


def history(session: Session, hypothesis_id: int) -> list[HistoryEntry]:
    """Status changes and decisions of one hypothesis, oldest first."""
    rows = session.scalars(select(HypothesisHistoryRow).where(HypothesisHistoryRow.hypothesis_id == hypothesis_id)
                           .order_by(HypothesisHistoryRow.seq))
    return [HistoryEntry(r.kind, r.from_value, r.to_value, r.note, r.actor, r.at) for r in rows]


def _refuse(row: HypothesisRow, current: Status, target: Status) -> Conflict:
    ref = ref_of(row.id)
    if current == target:
        return Conflict(f"{ref} is already {current.value}", hint=f"See it with `medcycle hypothesis show {ref}`.")
    if current in CLOSED:
        hint = f"It was closed as {current.value}; reopen it first: `medcycle hypothesis reopen {ref} --reason TEXT`."
    elif target == Status.VALIDATED:
        hint = f"Explore it before validating: `medcycle hypothesis explore {ref}`."
    else:
        hint = f"From {current.value} it can go to: {', '.join(sorted(s.value for s in TRANSITIONS[current]))}."
    return Conflict(f"{ref} cannot go from {current.value} to {target.value}", hint=hint,
                    status=current.value, requested=target.value)


def _move(
    session: Session, ref: str | int, target: Status, reason: str | None, *, actor: str, via: str, action: str,
    allowed_from: frozenset[Status] | None = None,
) -> HypothesisRow:
    actor = inputs.name(actor, "actor")
    row = get_hypothesis(session, ref, for_update=True)
    current = Status(row.status)
    allowed = allowed_from is not None and current in allowed_from
    if not allowed and target not in TRANSITIONS[current]:
        raise _refuse(row, current, target)
    row.status, row.status_reason, row.status_changed_at = target.value, reason, utcnow()
    append_history(session, row, "status", current.value, target.value, reason, actor)
    record_change(session, row, actor, action, via=via, status_from=current.value, status_to=target.value,
                  reason=reason)
    return row


def explore(
    session: Session, ref: str | int, *, note: str | None = None, actor: str = "system", via: str = "library"
) -> HypothesisRow:
    """proposed → exploring: the team starts testing the idea."""
    return _move(session, ref, Status.EXPLORING, inputs.text(note, "note"), actor=actor, via=via, action="explore")


def close(
    session: Session,
    ref: str | int,
    verdict: Verdict | str,
    reason: str | None,
    *,
    actor: str = "system",
    via: str = "library",
) -> HypothesisRow:
    """Close with a verdict (validated from exploring; killed from proposed or exploring) and its reason."""
    chosen = parse(Verdict, verdict, "verdict")
    why = inputs.required_text(reason, "reason")
    return _move(session, ref, Status(chosen.value), why, actor=actor, via=via, action="close")


def reopen(
    session: Session, ref: str | int, reason: str | None, *, actor: str = "system", via: str = "library"
) -> HypothesisRow:
    """validated | killed → exploring, with the reason for looking again."""
    why = inputs.required_text(reason, "reason")
    row = get_hypothesis(session, ref)
    if Status(row.status) in OPEN:
        raise Conflict(f"{ref_of(row.id)} is {row.status}, not closed", hint="Only a validated or killed hypothesis "
                       "can be reopened.")
    return _move(session, ref, Status.EXPLORING, why, actor=actor, via=via, action="reopen", allowed_from=CLOSED)


def require_closer(principal: Principal, row: HypothesisRow) -> None:
    """Closing and reopening are for an admin or the hypothesis's owner."""
    if principal.can(Permission.ADMIN) or principal.name == row.owner:
        return
    raise PermissionDenied(
        f"{principal.name} may not close or reopen {ref_of(row.id)}: only its owner ({row.owner}) or an admin may",
        hint="Ask the owner or an admin, or have the owner changed with `medcycle hypothesis edit --owner`.",
        permission="close",
    )
