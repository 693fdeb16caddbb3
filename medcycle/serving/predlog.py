"""The worker's hook into the prediction log: one record per finished, failed, expired or refused job.

:func:`log_prediction` is the single place serving calls the monitoring layer
(:func:`medcycle.monitoring.log.record`), in the transaction that stores the job's result. The record is
built from the stored case summaries (so a job answered from a stored result logs the same way as the one
that computed it) plus, when the job computed, the first case's DICOM header and input statistics — the log
keeps only allow-listed header fields. A worker can be given another hook (``prediction_log=``) or none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from medcycle.jobs.base import Job
    from medcycle.serving.decode import DecodedCase

#: ``(session, job, model_ref, outcome, details)`` → None; ``details`` keys: cases, latency_ms, decoded,
#: mask_digest, error_class, error_message.
PredictionLog = Callable[[Session, "Job", str, str, dict[str, Any]], None]


def _first_ok(cases: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    return next((c for c in cases if c.get("status") == "ok"), cases[0] if cases else None)


def log_prediction(session: Session, job: Job, model_ref: str, outcome: str, details: dict[str, Any]) -> None:
    """Append the job's record to the prediction log (``outcome``: ok, error, timeout, refused) — once per job:
    a job redelivered after its worker died (and answered from its stored result) is not logged twice."""
    from sqlalchemy import select

    from medcycle.monitoring.describe import image_statistics
    from medcycle.monitoring.log import PredictionRecord, record
    from medcycle.monitoring.tables import PredictionRow

    if session.scalar(select(PredictionRow.id).where(PredictionRow.job_id == job.id).limit(1)) is not None:
        return

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
    stats: dict[str, float] = {}
    header = None
    if decoded is not None:
        header = decoded.header
        try:
            stats = image_statistics(decoded.pixels)
        except (ValueError, ArithmeticError):  # a constant or odd image: the record goes without statistics
            stats = {}
    scores = ood.get("scores") or {}
    record(session, PredictionRecord(
        model_version=model_ref, outcome=outcome, job_id=job.id, source=(job.payload or {}).get("source"),
        latency_ms=details.get("latency_ms"), header=header, input_stats=stats,
        input_digests=list((job.payload or {}).get("inputs") or [])[:100],
        ood_score=scores.get("image"), ood_ok=ood.get("ok"), ood_layer=ood.get("layer"),
        ood_reasons=list(ood.get("reasons") or []), probabilities=probabilities,
        positive=finding.get("positive_class"), predicted=finding.get("class") if rows else None,
        mask_area=mask.get("foreground_fraction"), mask_components=mask.get("components"),
        mask_digest=details.get("mask_digest"), error_class=details.get("error_class"),
        error_message=details.get("error_message")))
