"""The worker's hook into the prediction log: one record per finished, failed, expired or refused job.

:func:`log_predictions` is the single place serving calls the monitoring layer
(:func:`medcycle.monitoring.log.record_many`), in the transaction that stores the batch's results, with
one :class:`LogEntry` per job of the batch. A record is built from the stored case summaries (so a job
answered from a stored result logs the same way as the one that computed it) plus, when the job computed,
the first case's DICOM header, input statistics and penultimate features (``embedding``, for the drift
monitor's embedding signal) — the log keeps only allow-listed header fields. A worker can be given another
hook (``prediction_log=``) or none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from medcycle.jobs.base import Job
    from medcycle.monitoring.log import PredictionRecord
    from medcycle.serving.decode import DecodedCase


@dataclass
class LogEntry:
    """What the log gets of one job. ``details`` keys (all optional): cases, latency_ms, decoded (the
    :class:`~medcycle.serving.decode.DecodedCase` the header and statistics come from), input_stats and header
    (already taken from it), embedding, mask_digest, error_class, error_message."""

    job: Job
    model_ref: str
    outcome: str  # ok, error, timeout, refused
    details: dict[str, Any]


#: ``(session, entries)`` → None, in the caller's transaction.
PredictionLog = Callable[[Session, Sequence[LogEntry]], None]


def _first_ok(cases: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    return next((c for c in cases if c.get("status") == "ok"), cases[0] if cases else None)


def input_statistics(decoded: DecodedCase | None) -> dict[str, float]:
    """The log's input statistics of a decoded case ({} for none, or a constant or odd image)."""
    from medcycle.monitoring.describe import image_statistics

    if decoded is None:
        return {}
    try:
        return image_statistics(decoded.pixels)
    except (ValueError, ArithmeticError):
        return {}


def log_predictions(session: Session, entries: Sequence[LogEntry]) -> None:
    """Append each entry's record to the prediction log — once per job: a job redelivered after its worker died
    (and answered from its stored result) is not logged twice, nor a job named twice in ``entries``."""
    from sqlalchemy import select

    from medcycle.monitoring.log import record_many
    from medcycle.monitoring.tables import PredictionRow

    ids = list(dict.fromkeys(e.job.id for e in entries))
    if not ids:
        return
    seen = set(session.scalars(select(PredictionRow.job_id).where(PredictionRow.job_id.in_(ids))))
    records = []
    for entry in entries:
        if entry.job.id in seen:
            continue
        seen.add(entry.job.id)
        records.append(prediction_record(entry))
    if records:
        record_many(session, records)


def prediction_record(entry: LogEntry) -> PredictionRecord:
    """The :class:`~medcycle.monitoring.log.PredictionRecord` of one entry."""
    from medcycle.monitoring.log import PredictionRecord

    job, details = entry.job, entry.details
    cases: list[dict[str, Any]] = list(details.get("cases") or [])
    case = _first_ok(cases)
    decoded: DecodedCase | None = details.get("decoded")
    probabilities: dict[str, float] = {}
    ood: dict[str, Any] = (case or {}).get("ood") or {}
    finding = (case or {}).get("finding") or {}
    rows = (case or {}).get("probabilities") or []
    if rows:
        pick = int(finding.get("image", 0) or 0)
        probabilities = {str(k): float(v) for k, v in rows[min(pick, len(rows) - 1)].items()}
    mask = (case or {}).get("mask") or {}
    stats = details.get("input_stats")
    if stats is None:
        stats = input_statistics(decoded)
    header = details.get("header")
    if header is None and decoded is not None:
        header = decoded.header
    scores = ood.get("scores") or {}
    return PredictionRecord(
        model_version=entry.model_ref, outcome=entry.outcome, job_id=job.id, source=(job.payload or {}).get("source"),
        latency_ms=details.get("latency_ms"), header=header,
        input_stats=stats, input_digests=list((job.payload or {}).get("inputs") or [])[:100],
        ood_score=scores.get("image"), ood_ok=ood.get("ok"), ood_layer=ood.get("layer"),
        ood_reasons=list(ood.get("reasons") or []), probabilities=probabilities,
        positive=finding.get("positive_class"), predicted=finding.get("class") if rows else None,
        mask_area=mask.get("foreground_fraction"), mask_components=mask.get("components"),
        mask_digest=details.get("mask_digest"), embedding=details.get("embedding"),
        error_class=details.get("error_class"), error_message=details.get("error_message"))
