"""Apply a run's records to the metadata store, each sequence number exactly once.

This is where every write of the tracking SDK lands, whether it comes from the in-process writer
(:class:`LocalSink`), from a replayed journal (``medcycle run sync``) or from a remote client through
``POST /v1/runs/{id}/records``. The run row is locked for the transaction (``BEGIN IMMEDIATE`` on
SQLite, ``SELECT … FOR UPDATE`` on PostgreSQL); records at or below ``runs.applied_seq`` are skipped and
the next one must follow it without a gap, so a batch sent twice, or replayed after a crash, changes
nothing the second time.
"""

from __future__ import annotations

import logging
import math
import re
import socket
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from medcycle.errors import BackendUnavailable, Conflict, MedcycleError, ValidationFailed
from medcycle.experiments.records import Kind, Record, finite_or_none, pack_points, split_metrics, unpack_points
from medcycle.experiments.tables import (
    CHUNK_FORMAT_RAW,
    CHUNK_POINTS,
    ArtifactRow,
    CaptureRow,
    LogChunkRow,
    MetricChunkRow,
    MetricSeriesRow,
    ProjectRow,
    RunParamRow,
    RunRow,
    RunTagRow,
)
from medcycle.experiments.verdict import verdict_of, verdict_reasons
from medcycle.objects.base import DIGEST_RE, check_digest
from medcycle.objects.refs import add_ref
from medcycle.store.base import new_id, utcnow
from medcycle.store.engine import IMMEDIATE

if TYPE_CHECKING:
    from medcycle.platform import Platform

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/ ]{0,127}$")
STATUSES = ("running", "finished", "failed", "killed", "crashed")
ARTIFACT_KINDS = ("artifact", "model", "image", "input")
MAX_KEY = 256
MAX_VALUE = 65_535

log = logging.getLogger(__name__)


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise ValidationFailed(f"{run_id!r} is not a run id", hint="A run id is 32 lowercase hex characters.")
    return run_id


def check_key(key: object, what: str = "key") -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or any(ord(c) < 32 for c in key):
        raise ValidationFailed(f"{what} {key!r} is not valid",
                               hint=f"Use a non-empty string of at most {MAX_KEY} printable characters.")
    return key


def clean_text(text: str) -> str:
    """``text`` as PostgreSQL and SQLite both store it: no NUL, no lone surrogates (escaped, not dropped)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def numeric_value(text: str) -> float | None:
    """The number a param's text denotes (``"1e-3"`` → 0.001), or ``None``; booleans are not numbers."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _ts(value: object, what: str) -> datetime:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValidationFailed(f"{what} must be a UNIX time in seconds, not {value!r}")
    return datetime.fromtimestamp(float(value), UTC)


def _str_or_none(body: dict[str, Any], name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ValidationFailed(f"{name} must be a string of at most {limit} characters")
    return value


def _lock(session: Session, run_id: str) -> RunRow | None:
    if session.get_bind().dialect.name == "sqlite":
        session.connection(execution_options={IMMEDIATE: True})
        return session.get(RunRow, run_id)
    return session.scalar(select(RunRow).where(RunRow.id == run_id).with_for_update())


def applied_seq(session: Session, run_id: str) -> int:
    """The highest record applied for ``run_id`` (0 when the run is unknown)."""
    value = session.scalar(select(RunRow.applied_seq).where(RunRow.id == check_run_id(run_id)))
    return int(value or 0)


def apply_records(session: Session, run_id: str, records: Iterable[Record], *, actor: str | None = None) -> int:
    """Apply ``records`` of ``run_id`` in the session's transaction; returns the run's ``applied_seq``.

    Args:
        actor: who is writing (the API's principal); it overrides the ``user`` a start record names.

    Raises:
        ValidationFailed: a malformed record (nothing of the batch is applied).
        Conflict: a gap in the sequence numbers (records are missing; replay the journal from the start).
    """
    check_run_id(run_id)
    row = _lock(session, run_id)
    done = row.applied_seq if row is not None else 0
    touched_verdict = False
    for record in sorted(records, key=lambda r: r.seq):
        if record.seq <= done:
            continue
        if record.seq != done + 1:
            raise Conflict(f"run {run_id}: record {record.seq} arrived but {done + 1} is next",
                           hint="Records are missing; replay the run's journal with `medcycle run sync`.",
                           expected=done + 1, got=record.seq)
        if row is None:
            if record.kind is not Kind.START:
                raise Conflict(f"run {run_id} is unknown and record {record.seq} is not its start",
                               hint="Replay the run's journal from the beginning with `medcycle run sync`.")
            row = _start(session, run_id, record.body, actor)
            touched_verdict = True
        else:
            touched_verdict |= _apply_one(session, row, record)
        done = record.seq
    if row is None:
        return 0
    if touched_verdict:
        capture = session.get(CaptureRow, run_id)
        reasons = verdict_reasons(capture.data if capture else None, seeded=row.seeded,
                                  dataset_digest=row.dataset_digest)
        row.verdict, row.verdict_reasons = verdict_of(reasons), reasons
    if done != row.applied_seq:
        row.applied_seq = done
        row.updated_at = utcnow()
    try:
        session.flush()
    except SQLIntegrityError as exc:
        raise BackendUnavailable(f"run {run_id}: a concurrent writer got there first ({exc.orig})",
                                 hint="Send the batch again; applied records are skipped.") from exc
    return done


# -- record handlers --------------------------------------------------------------------------------
def _project(session: Session, name: str, actor: str) -> ProjectRow:
    if not NAME_RE.match(name):
        raise ValidationFailed(f"project name {name!r} is not valid",
                               hint="Use letters, digits, '.', '_', '-', '/' and spaces; start with a letter or digit.")
    project = session.scalar(select(ProjectRow).where(ProjectRow.name == name))
    if project is None:
        project = ProjectRow(id=new_id(), name=name, created_by=actor, created_at=utcnow())
        try:
            with session.begin_nested():
                session.add(project)
        except SQLIntegrityError:
            project = session.scalars(select(ProjectRow).where(ProjectRow.name == name)).one()
    return project


def resolve_dataset(session: Session, ref: str | None, digest: str | None = None) -> str | None:
    """The version digest a dataset reference names, when the datasets layer knows it; else ``None``.

    ``digest`` (resolved by the client when the run started) wins when that version exists: a plain
    ``NAME`` means the latest version *at the start*, not at a later replay.
    """
    if not ref and not digest:
        return None
    try:
        from medcycle.datasets.tables import DatasetVersionRow
        from medcycle.datasets.versions import resolve
    except ImportError:  # the datasets layer is optional for tracking
        return None
    try:
        with session.begin_nested():
            for candidate in (digest, ref):
                if candidate and DIGEST_RE.match(candidate) and session.get(DatasetVersionRow, candidate):
                    return candidate
            return resolve(session, ref).id if ref else None
    except (MedcycleError, SQLAlchemyError):  # an unknown or unusable ref never loses the run
        return None


def _start(session: Session, run_id: str, body: dict[str, Any], actor: str | None) -> RunRow:
    project_name = body.get("project")
    if not isinstance(project_name, str):
        raise ValidationFailed("a start record needs a project name")
    user = actor or _str_or_none(body, "user", 64) or "unknown"
    project = _project(session, project_name, user)
    name = _str_or_none(body, "name", 256) or f"run-{run_id[:8]}"
    dataset = _str_or_none(body, "dataset", 256)
    row = RunRow(
        id=run_id, project_id=project.id, name=name, status="running",
        hypothesis=_str_or_none(body, "hypothesis", 128), dataset_ref=dataset,
        dataset_digest=resolve_dataset(session, dataset, _str_or_none(body, "dataset_digest", 64)),
        created_by=user[:64], host=_str_or_none(body, "host", 256) or socket.gethostname(),
        started_at=_ts(body.get("started_at"), "started_at"),
        updated_at=utcnow(), applied_seq=0, seeded=False, verdict="not reproducible", verdict_reasons=[], log_bytes=0,
    )
    session.add(row)
    session.flush()
    _link_hypothesis(session, row, user)
    return row


def _link_hypothesis(session: Session, row: RunRow, actor: str) -> None:
    """Link a run that names a hypothesis (and its fixed dataset version) to that hypothesis.

    An unknown hypothesis or a dataset reference that names no fixed version never loses the run: the link is
    skipped (and logged), the run keeps the reference it was given.
    """
    if not row.hypothesis:
        return
    try:
        from medcycle.hypotheses.links import link
    except ImportError:  # the hypotheses layer is optional for tracking
        return
    targets = [("run", row.id)]
    if row.dataset_ref and row.dataset_digest:
        targets.append(("dataset", row.dataset_ref))
    who = "".join(actor.split())[:64] or "system"
    for kind, target in targets:
        try:
            with session.begin_nested():
                link(session, row.hypothesis, kind, target, note="linked by the run", actor=who, via="tracking")
        except (MedcycleError, SQLAlchemyError) as exc:
            log.info("run %s: not linked to hypothesis %s as %s (%s)", row.id, row.hypothesis, kind, exc)


def _apply_one(session: Session, row: RunRow, record: Record) -> bool:
    """Apply one record; returns whether the verdict may have changed."""
    body = record.body
    if record.kind is Kind.PARAMS:
        _upsert_params(session, row.id, body.get("params"))
    elif record.kind is Kind.TAGS:
        _upsert_tags(session, row.id, body.get("tags"))
    elif record.kind is Kind.METRICS:
        _append_metrics(session, row.id, record)
    elif record.kind is Kind.LOG:
        stream, text = body.get("stream"), body.get("text")
        if stream not in ("stdout", "stderr") or not isinstance(text, str):
            raise ValidationFailed(f"record {record.seq}: a log record needs stream stdout|stderr and text")
        text = clean_text(text)
        session.add(LogChunkRow(run_id=row.id, seq=record.seq, stream=stream, at=_ts(body.get("at"), "at"), text=text))
        row.log_bytes += len(text.encode())
    elif record.kind is Kind.ARTIFACT:
        _artifact(session, row.id, body)
    elif record.kind in (Kind.CAPTURE, Kind.SEED):
        _capture(session, row, record)
        return True
    elif record.kind is Kind.END:
        status = body.get("status")
        if status not in STATUSES or status == "running":
            raise ValidationFailed(f"record {record.seq}: end status must be one of {', '.join(STATUSES[1:])}")
        row.status = str(status)
        row.ended_at = _ts(body.get("ended_at"), "ended_at")
        return True
    elif record.kind is Kind.START:
        raise ValidationFailed(f"record {record.seq}: run {row.id} already started")
    return False


def _checked_kv(values: object, limit: int) -> dict[str, str]:
    if not isinstance(values, dict):
        raise ValidationFailed("params and tags records need an object of key → text")
    for key, value in values.items():
        check_key(key)
        if not isinstance(value, str) or len(value) > limit:
            raise ValidationFailed(f"the value of {key!r} must be text of at most {limit} characters")
    return {key: clean_text(value) for key, value in values.items()}


def _upsert_params(session: Session, run_id: str, values: object) -> None:
    checked = _checked_kv(values, MAX_VALUE)
    existing = {r.key: r for r in session.scalars(
        select(RunParamRow).where(RunParamRow.run_id == run_id, RunParamRow.key.in_(list(checked))))}
    for key, value in checked.items():
        row = existing.get(key)
        if row is None:
            session.add(RunParamRow(run_id=run_id, key=key, value=value, value_num=numeric_value(value)))
        else:
            row.value, row.value_num = value, numeric_value(value)


def _upsert_tags(session: Session, run_id: str, values: object) -> None:
    checked = _checked_kv(values, 1024)
    existing = {r.key: r for r in session.scalars(
        select(RunTagRow).where(RunTagRow.run_id == run_id, RunTagRow.key.in_(list(checked))))}
    for key, value in checked.items():
        row = existing.get(key)
        if row is None:
            session.add(RunTagRow(run_id=run_id, key=key, value=value))
        else:
            row.value = value


_C = MetricChunkRow
#: Statements built once (building them costs more than running them): the summaries of some keys of a run
#: with their last chunk when it has room, and bulk inserts / updates by primary key.
_SUMMARIES_AND_TAILS = (
    select(MetricSeriesRow.key, MetricSeriesRow.count.label("points"), MetricSeriesRow.chunks,
           MetricSeriesRow.min_value, MetricSeriesRow.max_value, _C.n, _C.data, _C.step_min, _C.step_max)
    .select_from(MetricSeriesRow)
    .outerjoin(_C, and_(_C.run_id == MetricSeriesRow.run_id, _C.key == MetricSeriesRow.key,
                        _C.chunk == MetricSeriesRow.chunks - 1, _C.n < CHUNK_POINTS))
    .where(MetricSeriesRow.run_id == bindparam("run_id"), MetricSeriesRow.key.in_(bindparam("keys", expanding=True)))
)
_INSERT_SUMMARY, _UPDATE_SUMMARY = insert(MetricSeriesRow), update(MetricSeriesRow)
_INSERT_CHUNK, _UPDATE_CHUNK = insert(MetricChunkRow), update(MetricChunkRow)


def _append_metrics(session: Session, run_id: str, record: Record) -> None:
    """Append a metrics record with a fixed number of statements, however many keys: one query for the
    summaries and their tail chunks, then bulk inserts and bulk updates by primary key."""
    series = [(check_key(k, "metric key"), s, t, v) for k, s, t, v in split_metrics(record) if len(s)]
    if not series:
        return
    known = {row.key: row for row in session.execute(
        _SUMMARIES_AND_TAILS, {"run_id": run_id, "keys": [k for k, *_ in series]})}
    new_summaries: list[dict[str, Any]] = []
    summary_updates: list[dict[str, Any]] = []
    tail_updates: list[dict[str, Any]] = []
    new_chunks: list[dict[str, Any]] = []
    for key, steps, times, values in series:
        row = known.get(key)
        count, chunks = (row.points, row.chunks) if row else (0, 0)
        lo, hi = (row.min_value, row.max_value) if row else (None, None)
        pos, total = 0, len(steps)
        if row is not None and row.data is not None:  # the last chunk has room: extend it
            take = min(CHUNK_POINTS - row.n, total)
            old_s, old_t, old_v = unpack_points(row.data, row.n)
            old_s.extend(steps[:take])
            old_t.extend(times[:take])
            old_v.extend(values[:take])
            tail_updates.append({"run_id": run_id, "key": key, "chunk": chunks - 1, "n": row.n + take,
                                 "step_min": min(row.step_min, min(steps[:take])),
                                 "step_max": max(row.step_max, max(steps[:take])),
                                 "data": pack_points(old_s, old_t, old_v)})
            pos = take
        while pos < total:
            end = min(pos + CHUNK_POINTS, total)
            s, t, v = steps[pos:end], times[pos:end], values[pos:end]
            new_chunks.append({"run_id": run_id, "key": key, "chunk": chunks, "n": end - pos, "step_min": min(s),
                               "step_max": max(s), "format": CHUNK_FORMAT_RAW, "data": pack_points(s, t, v)})
            chunks += 1
            pos = end
        finite = [x for x in values if math.isfinite(x)]
        if finite:
            lo = min(finite) if lo is None else min(lo, min(finite))
            hi = max(finite) if hi is None else max(hi, max(finite))
        values_row = {"run_id": run_id, "key": key, "count": count + total, "chunks": chunks,
                      "last_value": finite_or_none(values[-1]), "last_step": steps[-1], "last_time": times[-1],
                      "min_value": lo, "max_value": hi}
        (summary_updates if row is not None else new_summaries).append(values_row)
    for stmt, rows in ((_INSERT_SUMMARY, new_summaries), (_UPDATE_SUMMARY, summary_updates),
                       (_UPDATE_CHUNK, tail_updates), (_INSERT_CHUNK, new_chunks)):
        if rows:
            session.execute(stmt, rows)


def _artifact(session: Session, run_id: str, body: dict[str, Any]) -> None:
    name, kind = body.get("name"), body.get("kind")
    if not isinstance(name, str) or not 0 < len(name) <= 512 or kind not in ARTIFACT_KINDS:
        raise ValidationFailed(f"an artifact needs a name (1-512 characters) and a kind among "
                               f"{', '.join(ARTIFACT_KINDS)}")
    digest = body.get("digest")
    if digest is not None:
        check_digest(digest)
    size, step, meta = body.get("size"), body.get("step"), body.get("meta") or {}
    if (size is not None and type(size) is not int) or (step is not None and type(step) is not int):
        raise ValidationFailed("artifact size and step must be whole numbers")
    if not isinstance(meta, dict):
        raise ValidationFailed("artifact meta must be an object")
    if body.get("missing"):
        meta = {**meta, "missing": "the file changed or vanished before it was uploaded"}
    session.add(ArtifactRow(run_id=run_id, name=name, kind=kind, digest=digest, size=size, step=step, meta=meta,
                            created_at=_ts(body.get("at"), "at") if "at" in body else utcnow()))
    if digest is not None and not body.get("missing"):
        add_ref(session, digest, "run", run_id, size=size)


def _capture(session: Session, row: RunRow, record: Record) -> None:
    capture = session.get(CaptureRow, row.id)
    if capture is None:
        capture = CaptureRow(run_id=row.id, data={}, seeds={})
        session.add(capture)
    body = record.body
    if record.kind is Kind.SEED:
        seeds = body.get("seeds")
        if not isinstance(seeds, dict):
            raise ValidationFailed(f"record {record.seq}: a seed record needs an object 'seeds'")
        capture.seeds = seeds
        row.seeded = True
        return
    data = body.get("capture")
    if not isinstance(data, dict):
        raise ValidationFailed(f"record {record.seq}: a capture record needs an object 'capture'")
    git_value = data.get("git")
    git: dict[str, Any] = git_value if isinstance(git_value, dict) else {}
    capture.data = data
    capture.commit = _clip(git.get("commit"), 64)
    capture.branch = _clip(git.get("branch"), 256)
    capture.dirty = bool(git["dirty"]) if "dirty" in git else None
    capture.pushed = bool(git["pushed"]) if "pushed" in git else None
    for column in ("diff_digest", "packages_digest"):
        digest = body.get(column)
        if digest is not None:
            check_digest(digest)
            add_ref(session, digest, "run", row.id)
        setattr(capture, column, digest)
    capture.packages_hash = _clip(body.get("packages_hash"), 64)


def _clip(value: object, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


# -- the in-process sink ----------------------------------------------------------------------------
class LocalSink:
    """Writes records straight into a :class:`~medcycle.platform.Platform` (the embedded home or a shared DB)."""

    def __init__(self, platform: Platform) -> None:
        from medcycle.platform import redact

        self.platform = platform
        self.target = f"db:{redact(platform.settings.resolved_database_url)}"

    def apply(self, run_id: str, records: list[Record]) -> int:
        with self.platform.session() as session:
            return apply_records(session, run_id, records)

    def applied_seq(self, run_id: str) -> int:
        with self.platform.session() as session:
            return applied_seq(session, run_id)

    def resolve_dataset(self, ref: str) -> str | None:
        with self.platform.session() as session:
            return resolve_dataset(session, ref)

    def has_object(self, digest: str) -> bool:
        return self.platform.objects.exists(digest)

    def put_object(self, path: Path, digest: str) -> None:
        self.platform.objects.put(path, expected_digest=digest)

    def close(self) -> None:
        return None
