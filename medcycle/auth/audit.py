"""The audit log: one row per data read and per privileged change. Never holds patient data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from medcycle.auth.roles import Principal
from medcycle.auth.tables import AuditEventRow
from medcycle.store.base import utcnow

if TYPE_CHECKING:
    from medcycle.platform import Platform


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    at: datetime
    actor: str
    action: str
    target_kind: str | None
    target_id: str | None
    outcome: str
    via: str
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target_kind": self.target_kind,
            "target_id": self.target_id,
            "outcome": self.outcome,
            "via": self.via,
            "details": self.details,
        }


def record(
    session: Session,
    actor: Principal | str,
    action: str,
    *,
    target_kind: str | None = None,
    target_id: str | None = None,
    outcome: str = "ok",
    via: str = "library",
    **details: Any,
) -> None:
    """Append an audit event in the caller's transaction (so it commits or rolls back with the change).

    The row is inserted at once on the session's connection (one Core INSERT, not an ORM object the next flush
    writes: every request that submits or reads data records one), without flushing the session's pending objects.
    """
    session.connection().execute(_INSERT, {
        "at": utcnow(),
        "actor": actor if isinstance(actor, str) else actor.name,
        "action": action,
        "target_kind": target_kind,
        "target_id": target_id,
        "outcome": outcome,
        "via": via,
        "details": details,
    })


_INSERT = insert(cast(Table, AuditEventRow.__table__))


def record_read(
    platform: Platform,
    actor: Principal | str,
    action: str,
    *,
    target_kind: str | None = None,
    target_id: str | None = None,
    via: str = "library",
    **details: Any,
) -> None:
    """Record a data read in its own committed transaction, before the data is handed out.

    Reads are audited fail-closed: if the event cannot be written, this raises and the caller must not
    release the data.
    """
    with platform.session(write=True) as session:
        record(session, actor, action, target_kind=target_kind, target_id=target_id, via=via, **details)


def query(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """Newest first. ``action`` matches a prefix (``object.`` matches ``object.read``)."""
    stmt = select(AuditEventRow).order_by(AuditEventRow.seq.desc()).limit(max(1, min(limit, 10_000)))
    if actor:
        stmt = stmt.where(AuditEventRow.actor == actor)
    if action:
        stmt = stmt.where(AuditEventRow.action.startswith(action, autoescape=True))
    if since:
        stmt = stmt.where(AuditEventRow.at >= since)
    return [
        AuditEvent(r.seq, r.at, r.actor, r.action, r.target_kind, r.target_id, r.outcome, r.via, r.details or {})
        for r in session.scalars(stmt)
    ]
