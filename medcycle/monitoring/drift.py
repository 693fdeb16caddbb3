"""Drift over the prediction log: cut each model version's successful predictions into windows, test each
window against the version's reference, record it, and page when a signal persists.

Windows are consecutive runs of exactly ``W`` successful predictions in log order (time, then id), so they
never overlap and a restart continues where the last window ended. Predictions younger than
:data:`SETTLE` are left for the next run (a transaction still committing could otherwise be skipped).
Refused and failed jobs are not in the windows: the OOD and error-rate rules watch those.

Every tested window is stored (:class:`~medcycle.monitoring.tables.DriftWindowRow`) with each signal's
statistic, threshold and p-value; dashboards draw them. A signal that drifts in ``k`` of its last ``n``
windows opens (or counts up) a ``page`` alert ``drift:VERSION:SIGNAL``; after ``n`` windows without drift
the alert resolves itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from medcycle.monitoring import alerts, links
from medcycle.monitoring.log import decode_embedding
from medcycle.monitoring.persistence import Persistence
from medcycle.monitoring.reference import Reference, SignalResult, latest, load, references
from medcycle.monitoring.signals import CATEGORICAL, Case
from medcycle.monitoring.tables import AlertRow, DriftWindowRow, PredictionRow, ReferenceRow
from medcycle.objects.base import ObjectStore
from medcycle.store.base import new_id, utcnow

SETTLE = timedelta(seconds=60)
MAX_WINDOWS = 500  # per version and run; the next run continues


def case_of(row: PredictionRow, positive: str | None) -> Case:
    """What drift looks at in one logged prediction."""
    categorical = {f: getattr(row, f) for f in CATEGORICAL}
    if row.probabilities:
        chosen = positive if positive in row.probabilities else list(row.probabilities)[-1]
        is_positive: bool | None = row.predicted == chosen
    elif row.mask_area is not None:
        is_positive = row.mask_area > 0
    else:
        is_positive = None
    return Case(categorical, dict(row.input_stats or {}), decode_embedding(row.embedding), row.score, is_positive,
                row.mask_area)


@dataclass
class VersionDrift:
    model_version: str
    reference_id: str
    windows: int = 0
    pending: int = 0
    drifted: dict[str, int] = field(default_factory=dict)
    paged: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "reference_id": self.reference_id, "windows": self.windows,
                "pending": self.pending, "drifted": self.drifted, "paged": self.paged, "resolved": self.resolved}


def alert_key(model_version: str, signal: str) -> str:
    return f"drift:{model_version}:{signal}"


def _history(session: Session, model_version: str, n: int) -> tuple[DriftWindowRow | None, dict[str, list[bool]]]:
    rows = list(session.scalars(select(DriftWindowRow).where(DriftWindowRow.model_version == model_version)
                                .order_by(DriftWindowRow.seq.desc()).limit(n)))
    history: dict[str, list[bool]] = {}
    for row in reversed(rows):
        for name in row.signals:
            history.setdefault(name, []).append(name in row.drifted)
    return (rows[0] if rows else None), history


def _pending(session: Session, model_version: str, last: DriftWindowRow | None, until: datetime,
             limit: int) -> list[PredictionRow]:
    query = select(PredictionRow).where(PredictionRow.model_version == model_version,
                                        PredictionRow.outcome == "ok", PredictionRow.at <= until)
    if last is not None:
        query = query.where(or_(PredictionRow.at > last.last_at,
                                and_(PredictionRow.at == last.last_at, PredictionRow.id > last.last_prediction_id)))
    return list(session.scalars(query.order_by(PredictionRow.at, PredictionRow.id).limit(limit)))


def _run_id(session: Session, model_version: str) -> str | None:
    from medcycle.errors import MedcycleError
    from medcycle.models.registry import resolve

    try:
        return resolve(session, model_version).run_id
    except MedcycleError:
        return None


def _raise(session: Session, version: str, name: str, result: SignalResult, window: DriftWindowRow,
           reference: Reference, run_id: str | None, now: datetime) -> AlertRow:
    k, n = reference.policy.k, reference.policy.n
    detail = result.detail
    what = detail.get("feature") or detail.get("field") or ""
    title = (f"Drift in {name}{f' ({what})' if what else ''} of {version}: {k} of the last {n} windows of "
             f"{reference.policy.window} predictions")
    link = {"dashboard": links.dashboard(version, since=window.first_at - timedelta(days=1)),
            "prediction": links.prediction(window.last_prediction_id),
            "input": links.prediction_image(window.last_prediction_id), "model": links.model(version)}
    if run_id:
        link["run"] = links.run(run_id)
    row = alerts.raise_alert(session, key=alert_key(version, name), group=f"model:{version}", kind="drift",
                             level=alerts.Severity.PAGE, title=title, model_version=version, now=now, links=link,
                             details={"signal": name, "window": window.seq, **result.to_dict()})
    row.links = {**row.links, "alert": links.alert(row.id)}
    return row


def evaluate_version(session: Session, objects: ObjectStore, ref_row: ReferenceRow, *, now: datetime | None = None,
                     max_windows: int = MAX_WINDOWS) -> VersionDrift:
    """Test every complete new window of one version (see the module docstring)."""
    now = now or utcnow()
    reference = load(objects, ref_row)
    policy = reference.policy
    version = ref_row.model_version
    out = VersionDrift(version, ref_row.id)
    last, history = _history(session, version, policy.n)
    persistence = Persistence(policy.k, policy.n, history)
    rows = _pending(session, version, last, now - SETTLE, policy.window * max_windows + 1)
    seq = last.seq + 1 if last is not None else 1
    run_id = _run_id(session, version)
    full = len(rows) // policy.window
    for w in range(min(full, max_windows)):
        chunk = rows[w * policy.window:(w + 1) * policy.window]
        results = reference.evaluate([case_of(r, reference.positive) for r in chunk])
        flags = {name: r.drift for name, r in results.items()}
        started = persistence.update(flags)
        window = DriftWindowRow(id=new_id(), model_version=version, reference_id=ref_row.id, seq=seq,
                                size=len(chunk), first_at=chunk[0].at, last_at=chunk[-1].at,
                                last_prediction_id=chunk[-1].id, signals={n: r.to_dict() for n, r in results.items()},
                                drifted=sorted(n for n, f in flags.items() if f), paged=started, created_at=now)
        session.add(window)
        session.flush()
        for name in sorted(persistence.firing):
            row = _raise(session, version, name, results[name], window, reference, run_id, now)
            if name in started:
                out.paged.append({"signal": name, "window": seq, "alert": row.id})
        for name in results:
            if persistence.quiet(name) and alerts.resolve(session, alert_key(version, name), now=now):
                out.resolved.append(name)
        for name in window.drifted:
            out.drifted[name] = out.drifted.get(name, 0) + 1
        seq += 1
        out.windows += 1
    out.pending = len(rows) - out.windows * policy.window
    return out


def evaluate(platform: Any, *, model_version: str | None = None, now: datetime | None = None) -> list[VersionDrift]:
    """Run drift for one model version, or for every version that has a reference."""
    from medcycle.errors import NotFound

    with platform.session() as session:
        if model_version is not None:
            row = latest(session, model_version)
            if row is None:
                raise NotFound(f"{model_version} has no drift reference",
                               hint=f"Capture one: medcycle monitor reference capture {model_version} --on NAME@TAG.")
            rows = [row]
        else:
            rows = references(session)
        return [evaluate_version(session, platform.objects, r, now=now) for r in rows]


def windows(session: Session, *, model_version: str | None = None, since: datetime | None = None,
            limit: int = 500) -> Sequence[DriftWindowRow]:
    """Stored windows, oldest first (for dashboards and reports)."""
    query = select(DriftWindowRow)
    if model_version:
        query = query.where(DriftWindowRow.model_version == model_version)
    if since is not None:
        query = query.where(DriftWindowRow.last_at >= since)
    rows = list(session.scalars(query.order_by(DriftWindowRow.last_at.desc(), DriftWindowRow.seq.desc())
                                .limit(limit)))
    return rows[::-1]
