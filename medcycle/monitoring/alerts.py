"""Alerts: severity tiers, deduplication, grouping, cooldown, acknowledge and silence.

* **Severity** — ``info`` (shown on the dashboard and in reports, never sent), ``warning`` (sent to the
  chat) and ``page`` (sent at once, and to Sentry when it is configured, so its own routing applies).
* **Deduplication** — an alert is identified by its ``key`` (``drift:chest@v3:intensity``); raising it
  again while it is open or acknowledged counts up (``count``, ``last_at``) instead of adding a row, and
  a higher severity escalates it (an acknowledged alert that escalates is open again).
* **Grouping** — alerts sharing a ``group_key`` (usually the model version) due at the same time go out as
  one chat message.
* **Cooldown** — an open alert is sent again only after its tier's cooldown (pages 1 h, warnings 6 h),
  or at once when it escalates; acknowledged and resolved alerts are not sent again.
* **Silence** — a silence matches alert keys by shell pattern (``drift:chest@v3:*``) until a time; a
  silenced alert is still recorded and counted, it is just not sent.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import Conflict, NotFound, UsageError
from medcycle.monitoring.tables import AlertRow, SilenceRow
from medcycle.store.base import new_id, utcnow

MAX_SILENCE = timedelta(days=30)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    PAGE = "page"

    @property
    def rank(self) -> int:
        return ("info", "warning", "page").index(self.value)


class State(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Cooldowns:
    page: timedelta = timedelta(hours=1)
    warning: timedelta = timedelta(hours=6)

    def of(self, severity: Severity) -> timedelta | None:
        return {Severity.PAGE: self.page, Severity.WARNING: self.warning}.get(severity)


def severity(value: str) -> Severity:
    try:
        return Severity(value)
    except ValueError:
        raise UsageError(f"{value!r} is not a severity", hint="Use info, warning or page.") from None


def raise_alert(session: Session, *, key: str, group: str, kind: str, level: Severity | str, title: str,
                details: Mapping[str, Any] | None = None, links: Mapping[str, Any] | None = None,
                model_version: str | None = None, now: datetime | None = None) -> AlertRow:
    """Open an alert, or count a repeat of the open one with the same ``key`` (see the module docstring)."""
    level = severity(str(level))
    if not key or len(key) > 256 or not title:
        raise UsageError("an alert needs a key (at most 256 characters) and a title",
                         hint="E.g. key='drift:chest@v3:intensity'.")
    now = now or utcnow()
    row = session.scalar(select(AlertRow).where(AlertRow.key == key, AlertRow.state != State.RESOLVED.value)
                         .order_by(AlertRow.first_at.desc()).limit(1))
    if row is None:
        row = AlertRow(id=new_id(), key=key, group_key=group[:256], kind=kind[:32], severity=level.value,
                       state=State.OPEN.value, title=title[:512], details=dict(details or {}),
                       links=dict(links or {}), model_version=model_version, count=1, first_at=now, last_at=now)
        session.add(row)
    else:
        row.count += 1
        row.last_at = now
        row.title = title[:512]
        row.details = dict(details or row.details)
        row.links = {**row.links, **dict(links or {})}
        if level.rank > Severity(row.severity).rank:
            row.severity = level.value
            row.state = State.OPEN.value  # an escalation is news even after an acknowledgement
    session.flush()
    return row


def get(session: Session, alert_id: str) -> AlertRow:
    row = session.get(AlertRow, alert_id)
    if row is None:
        raise NotFound(f"no alert {alert_id!r}", hint="See `medcycle monitor alerts list`.")
    return row


def list_alerts(session: Session, *, state: str | None = None, limit: int = 100) -> list[AlertRow]:
    query = select(AlertRow)
    if state:
        if state not in {s.value for s in State}:
            raise UsageError(f"{state!r} is not an alert state", hint="Use open, acknowledged or resolved.")
        query = query.where(AlertRow.state == state)
    return list(session.scalars(query.order_by(AlertRow.last_at.desc(), AlertRow.id).limit(limit)))


def acknowledge(session: Session, alert_id: str, *, actor: str, via: str = "library",
                now: datetime | None = None) -> AlertRow:
    """Someone took the case: the alert is not sent again unless it escalates."""
    row = get(session, alert_id)
    if row.state == State.RESOLVED.value:
        raise Conflict(f"alert {alert_id} is already resolved", hint="Nothing to acknowledge.")
    row.state, row.acked_by, row.acked_at = State.ACKNOWLEDGED.value, actor, now or utcnow()
    audit.record(session, actor, "monitoring.alert.ack", target_kind="alert", target_id=alert_id, via=via,
                 key=row.key)
    session.flush()
    return row


def resolve(session: Session, key: str, *, now: datetime | None = None) -> int:
    """Resolve the unresolved alerts with ``key`` (the condition cleared); returns how many."""
    rows = session.scalars(select(AlertRow).where(AlertRow.key == key, AlertRow.state != State.RESOLVED.value))
    n = 0
    for row in rows:
        row.state, row.resolved_at = State.RESOLVED.value, now or utcnow()
        n += 1
    session.flush()
    return n


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``1d`` or ``1w`` as a timedelta."""
    units = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
    value = (text or "").strip().lower()
    try:
        seconds = float(value[:-1]) * units[value[-1]]
    except (KeyError, ValueError, IndexError):
        raise UsageError(f"{text!r} is not a duration", hint="Write e.g. 30m, 2h, 1d or 1w.") from None
    if seconds <= 0:
        raise UsageError(f"{text!r} is not a positive duration", hint="Write e.g. 30m, 2h, 1d or 1w.")
    return timedelta(seconds=seconds)


def silence(session: Session, pattern: str, *, duration: timedelta, reason: str, actor: str, via: str = "library",
            now: datetime | None = None) -> SilenceRow:
    """Stop sending alerts whose key matches ``pattern`` for ``duration`` (at most 30 days)."""
    pattern, reason = (pattern or "").strip(), (reason or "").strip()
    if not pattern or len(pattern) > 256:
        raise UsageError("a silence needs a key pattern", hint="E.g. 'drift:chest@v3:*' or an alert's exact key.")
    if not reason:
        raise UsageError("a silence needs a reason", hint='Add --reason "scanner swap at site B, expected".')
    if duration > MAX_SILENCE:
        raise UsageError(f"a silence of {duration} is longer than {MAX_SILENCE.days} days",
                         hint="Silence for at most 30 days; fix or recalibrate what keeps alerting.")
    now = now or utcnow()
    row = SilenceRow(id=new_id(), pattern=pattern, until=now + duration, reason=reason[:2000], created_by=actor,
                     created_at=now)
    session.add(row)
    audit.record(session, actor, "monitoring.silence", target_kind="alert", target_id=pattern, via=via,
                 until=row.until.isoformat(), reason=reason[:200])
    session.flush()
    return row


def pattern_of(session: Session, text: str) -> str:
    """An alert id stands for that alert's key; anything else is already a key pattern."""
    row = session.get(AlertRow, text.strip()) if text and len(text.strip()) == 32 else None
    return row.key if row is not None else text


def silences(session: Session, *, now: datetime | None = None, active: bool = True) -> list[SilenceRow]:
    query = select(SilenceRow)
    if active:
        query = query.where(SilenceRow.until > (now or utcnow()))
    return list(session.scalars(query.order_by(SilenceRow.until.desc())))


def silenced_by(key: str, active: list[SilenceRow]) -> SilenceRow | None:
    return next((s for s in active if fnmatch.fnmatchcase(key, s.pattern)), None)


@dataclass
class Group:
    """Alerts due together under one group key: what one chat message carries."""

    key: str
    alerts: list[AlertRow] = field(default_factory=list)

    @property
    def severity(self) -> Severity:
        return max((Severity(a.severity) for a in self.alerts), key=lambda s: s.rank)


def due(session: Session, *, now: datetime | None = None, cooldowns: Cooldowns | None = None) -> list[Group]:
    """Open alerts to send now, grouped: never sent, escalated since sent, or past their cooldown; not
    silenced; ``info`` never."""
    now = now or utcnow()
    cooldowns = cooldowns or Cooldowns()
    active = silences(session, now=now)
    groups: dict[str, Group] = {}
    for row in session.scalars(select(AlertRow).where(AlertRow.state == State.OPEN.value)
                               .order_by(AlertRow.first_at, AlertRow.id)):
        level = Severity(row.severity)
        wait = cooldowns.of(level)
        if wait is None or silenced_by(row.key, active) is not None:
            continue
        escalated = row.notified_severity is None or Severity(row.notified_severity).rank < level.rank
        if escalated or row.notified_at is None or now - row.notified_at >= wait:
            groups.setdefault(row.group_key, Group(row.group_key)).alerts.append(row)
    return sorted(groups.values(), key=lambda g: (-g.severity.rank, g.key))


def mark_sent(rows: list[AlertRow], *, now: datetime | None = None) -> None:
    now = now or utcnow()
    for row in rows:
        row.notified_at, row.notified_severity = now, row.severity


def to_dict(row: AlertRow, *, active: list[SilenceRow] | None = None) -> dict[str, Any]:
    hushed = silenced_by(row.key, active) if active is not None else None
    return {"id": row.id, "key": row.key, "group": row.group_key, "kind": row.kind, "severity": row.severity,
            "state": row.state, "title": row.title, "details": row.details, "links": row.links,
            "model_version": row.model_version, "count": row.count, "first_at": row.first_at.isoformat(),
            "last_at": row.last_at.isoformat(),
            "notified_at": row.notified_at.isoformat() if row.notified_at else None,
            "acked_by": row.acked_by, "acked_at": row.acked_at.isoformat() if row.acked_at else None,
            "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
            "silenced_until": hushed.until.isoformat() if hushed else None}


def silence_dict(row: SilenceRow) -> dict[str, Any]:
    return {"id": row.id, "pattern": row.pattern, "until": row.until.isoformat(), "reason": row.reason,
            "created_by": row.created_by, "created_at": row.created_at.isoformat()}
