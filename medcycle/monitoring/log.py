"""The prediction log: one record per inference job, written by serving; read by reports, drift and dashboards.

Serving calls :func:`record` once per finished, failed, timed-out or refused job, in the transaction that
stores its result, with a :class:`PredictionRecord`. The record holds no patient data: header fields pass
through an allow-list (:func:`medcycle.monitoring.describe.header_fields`), error messages are scrubbed
(:func:`medcycle.monitoring.scrub.scrub_text`), inputs are referenced by object digest only.

Retention: :func:`purge` deletes records older than ``prediction_retention_days`` (default 90); drift
windows, reports and alerts keep their own summaries, so history outlives the raw log.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from medcycle.errors import NotFound, UsageError, ValidationFailed
from medcycle.monitoring.describe import header_fields
from medcycle.monitoring.scrub import scrub_text
from medcycle.monitoring.tables import PredictionRow
from medcycle.objects.base import DIGEST_RE
from medcycle.store.base import new_id, utcnow

DEFAULT_RETENTION_DAYS = 90
MAX_EMBEDDING = 4096
MAX_MESSAGE = 500
VERSION_REF = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}@v\d{1,9}$")


class Outcome(StrEnum):
    OK = "ok"  # the model answered
    ERROR = "error"  # the job failed (error_class says why)
    TIMEOUT = "timeout"  # past its deadline
    REFUSED = "refused"  # the OOD gate refused the input


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictionRecord:
    """What serving tells the log about one job.

    Attributes:
        model_version: the version that ran, ``NAME@vN`` (serving resolves aliases before running).
        outcome: ``ok``, ``error``, ``timeout`` or ``refused``.
        header: the input's DICOM header (a pydicom Dataset or a mapping): only allow-listed acquisition
            fields are kept (:data:`medcycle.monitoring.describe.HEADER_FIELDS`).
        input_stats: :func:`medcycle.monitoring.describe.image_statistics` of the input.
        input_digests: object digests of the stored input (what the dashboard draws).
        ood_score, ood_ok, ood_layer, ood_reasons: the OOD gate's decision (``Decision`` of
            :mod:`medcycle.evaluation.ood`; the score of its image layer).
        probabilities: class → probability (classification); ``score`` defaults to the probability of
            ``positive`` (default: the last class), ``predicted`` to the most probable class.
        mask_area, mask_components, mask_digest: segmentation output (:func:`~.describe.mask_summary`, the
            stored mask object).
        embedding: penultimate-layer features (:func:`medcycle.monitoring.embeddings.penultimate`).
        latency_ms: from intake to result.
        error_class, error_message: for failures (the message is scrubbed and cut to 500 characters).
    """

    model_version: str
    outcome: Outcome | str = Outcome.OK
    job_id: str | None = None
    source: str | None = None
    at: datetime | None = None
    latency_ms: float | None = None
    header: Any = None
    input_stats: Mapping[str, float] = field(default_factory=dict)
    input_digests: Sequence[str] = ()
    ood_score: float | None = None
    ood_ok: bool | None = None
    ood_layer: str | None = None
    ood_reasons: Sequence[str] = ()
    probabilities: Mapping[str, float] = field(default_factory=dict)
    positive: str | None = None
    predicted: str | None = None
    score: float | None = None
    mask_area: float | None = None
    mask_components: int | None = None
    mask_digest: str | None = None
    embedding: Sequence[float] | npt.NDArray[Any] | None = None
    error_class: str | None = None
    error_message: str | None = None


def _finite(name: str, value: float | None, lo: float | None = None, hi: float | None = None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValidationFailed(f"prediction record: {name} is not a number: {value!r}",
                               hint=f"Pass {name} as a float (or None).") from None
    if not math.isfinite(number) or (lo is not None and number < lo) or (hi is not None and number > hi):
        bounds = f" in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else ""
        raise ValidationFailed(f"prediction record: {name} {number!r} is not a finite number{bounds}",
                               hint=f"Check how {name} is computed.")
    return number


def _text(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text[:limit] or None


def encode_embedding(values: Sequence[float] | npt.NDArray[Any] | None) -> bytes | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.size == 0:
        return None
    if arr.size > MAX_EMBEDDING or not np.isfinite(arr).all():
        raise ValidationFailed(f"prediction record: the embedding has {arr.size} values"
                               + ("" if np.isfinite(arr).all() else " and some are not finite"),
                               hint=f"Pass at most {MAX_EMBEDDING} finite penultimate features (pool feature maps).")
    return arr.astype("<f4").tobytes()


def decode_embedding(data: bytes | None) -> npt.NDArray[np.float64] | None:
    return None if not data else np.frombuffer(data, dtype="<f4").astype(np.float64)


def _version(session: Session, ref: str) -> tuple[str, str, str | None]:
    """``(model, NAME@vN, version id)`` of ``ref``; a version the registry does not know is still logged."""
    from medcycle.models.registry import resolve

    text = (ref or "").strip()
    if not text:
        raise UsageError("prediction record: model_version is empty", hint="Pass the version that ran, NAME@vN.")
    try:
        row = resolve(session, text)
    except (NotFound, UsageError):
        if not VERSION_REF.match(text):
            raise UsageError(f"prediction record: {text!r} is neither a registered model version nor NAME@vN",
                             hint="Resolve aliases before logging: pass the version that ran, NAME@vN.") from None
        return text.partition("@")[0], text, None
    return row.model, f"{row.model}@v{row.version}", row.id


def record(session: Session, rec: PredictionRecord) -> str:
    """Append ``rec`` to the prediction log in the caller's transaction; returns the record id."""
    return record_many(session, [rec])[0]


def record_many(session: Session, recs: Sequence[PredictionRecord]) -> list[str]:
    """Append ``recs`` in the caller's transaction (one flush; each version resolved once); returns their ids.
    A record that does not validate raises before any of them is added."""
    from sqlalchemy import insert

    versions: dict[str, tuple[str, str, str | None]] = {}
    rows = []
    for rec in recs:
        if rec.model_version not in versions:
            versions[rec.model_version] = _version(session, rec.model_version)
        rows.append(_row(rec, versions[rec.model_version]))
    if rows:
        session.flush()  # what the session holds goes first, as with session.add
        session.execute(insert(PredictionRow), rows)  # one executemany (Core: no ORM objects to build)
    return [str(row["id"]) for row in rows]


def _row(rec: PredictionRecord, resolved: tuple[str, str, str | None]) -> dict[str, Any]:
    """The record's column values (validated)."""
    try:
        outcome = Outcome(str(rec.outcome))
    except ValueError:
        raise UsageError(f"prediction record: {rec.outcome!r} is not an outcome",
                         hint=f"Use one of: {', '.join(o.value for o in Outcome)}.") from None
    model, version, version_id = resolved
    digests = [str(d) for d in rec.input_digests]
    for digest in [*digests, *([rec.mask_digest] if rec.mask_digest else [])]:
        if not DIGEST_RE.match(digest):
            raise ValidationFailed(f"prediction record: {digest!r} is not an object digest",
                                   hint="Reference stored inputs and masks by their 64-hex digest.")
    probs = {str(k)[:128]: _finite(f"probability of {k}", v, 0.0, 1.0) or 0.0 for k, v in rec.probabilities.items()}
    score = _finite("score", rec.score)
    predicted = rec.predicted
    if probs:
        positive = rec.positive if rec.positive is not None else list(probs)[-1]
        if positive not in probs:
            raise ValidationFailed(f"prediction record: positive class {positive!r} has no probability",
                                   hint=f"Choose one of {', '.join(probs)}.")
        score = probs[positive] if score is None else score
        predicted = predicted or max(probs, key=lambda k: probs[k])
    stats = {str(k): float(v) for k, v in rec.input_stats.items()
             if isinstance(v, int | float) and math.isfinite(float(v))}
    header = header_fields(rec.header)
    message = scrub_text(rec.error_message)[:MAX_MESSAGE] if rec.error_message else None
    return dict(
        id=new_id(), at=rec.at or utcnow(), job_id=_text(rec.job_id, 64), model=model, model_version=version,
        model_version_id=version_id, source=_text(rec.source, 128),
        manufacturer=_text(header.get("manufacturer"), 128), device_model=_text(header.get("device_model"), 128),
        modality=_text(header.get("modality"), 16), body_part=_text(header.get("body_part"), 64),
        view_position=_text(header.get("view_position"), 16), header=header, input_digests=digests,
        input_stats=stats, ood_score=_finite("ood_score", rec.ood_score), ood_ok=rec.ood_ok,
        ood_layer=_text(rec.ood_layer, 16), ood_reasons=[scrub_text(str(r))[:300] for r in rec.ood_reasons][:10],
        probabilities=probs, predicted=_text(predicted, 128), score=score,
        mask_area=_finite("mask_area", rec.mask_area, 0.0, 1.0),
        mask_components=None if rec.mask_components is None else int(rec.mask_components),
        mask_digest=rec.mask_digest, embedding=encode_embedding(rec.embedding),
        latency_ms=_finite("latency_ms", rec.latency_ms, 0.0, None), outcome=outcome.value,
        error_class=_text(rec.error_class, 128), error_message=message,
    )


def get(session: Session, prediction_id: str) -> PredictionRow:
    row = session.get(PredictionRow, prediction_id)
    if row is None:
        raise NotFound(f"no prediction {prediction_id!r} in the log",
                       hint="It may be older than the retention period; see `medcycle monitor report`.")
    return row


def recent(session: Session, *, model_version: str | None = None, source: str | None = None,
           outcome: str | None = None, since: datetime | None = None, limit: int = 50) -> list[PredictionRow]:
    """The newest predictions, optionally of one version, source or outcome."""
    query = select(PredictionRow)
    if model_version:
        query = query.where(PredictionRow.model_version == model_version)
    if source:
        query = query.where(PredictionRow.source == source)
    if outcome:
        query = query.where(PredictionRow.outcome == outcome)
    if since is not None:
        query = query.where(PredictionRow.at >= since)
    return list(session.scalars(query.order_by(PredictionRow.at.desc(), PredictionRow.id.desc()).limit(limit)))


def retention_days(settings: Any) -> float:
    return float(getattr(settings, "prediction_retention_days", DEFAULT_RETENTION_DAYS))


def purge(session: Session, *, older_than_days: float, now: datetime | None = None) -> int:
    """Delete prediction records older than ``older_than_days``; returns how many."""
    if not older_than_days > 0:
        raise UsageError(f"a retention of {older_than_days} days would delete the whole log",
                         hint="Give a positive number of days (default 90).")
    cutoff = (now or utcnow()) - timedelta(days=older_than_days)
    result = session.execute(delete(PredictionRow).where(PredictionRow.at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
