"""Finding a hypothesis by reference, and recording a change to one (timestamp + audit event)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import NotFound
from medcycle.hypotheses.inputs import parse_ref, ref_of
from medcycle.hypotheses.tables import HypothesisRow
from medcycle.store.base import utcnow

TARGET_KIND = "hypothesis"


def get_hypothesis(session: Session, ref: str | int, *, for_update: bool = False) -> HypothesisRow:
    """The hypothesis ``ref`` names (``H-7``, ``7``); :class:`NotFound` with a hint otherwise."""
    hypothesis_id = parse_ref(ref)
    row = session.get(HypothesisRow, hypothesis_id, with_for_update=for_update)
    if row is None:
        raise NotFound(
            f"hypothesis {ref_of(hypothesis_id)} does not exist",
            hint="List the register with `medcycle hypothesis list`.",
        )
    return row


def record_change(session: Session, row: HypothesisRow, actor: str, action: str, *, via: str, **details: Any) -> None:
    """Stamp ``row`` as updated and append ``hypothesis.<action>`` to the audit log, in the caller's transaction."""
    row.updated_at = utcnow()
    audit.record(session, actor, f"hypothesis.{action}", target_kind=TARGET_KIND, target_id=ref_of(row.id), via=via,
                 **details)
    session.flush()
