"""``ingest``: files, folders, zips and DICOMDIR trees into the catalog, de-identified before storage.

Work is split in two: worker processes read, check, de-identify, measure and store each file
(:mod:`medcycle.catalog.ingest_worker`); this process is the single writer of catalog rows, in
batches. Idempotent and resumable: a file whose keyed content hash is already recorded is skipped,
objects are content-addressed, and catalog rows of one file are written in one savepoint — so a
``kill -9`` at any moment followed by a re-run ends with nothing missing and nothing doubled.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.catalog import ingest_worker as worker
from medcycle.catalog.deid import DeidOptions, Pseudonymizer
from medcycle.catalog.inputs import InputFile, iter_inputs
from medcycle.catalog.keys import load_or_create_key
from medcycle.catalog.sources import ensure_source
from medcycle.catalog.tables import IngestFileRow, IngestRunRow, InstanceRow, PatientRow, SeriesRow, StudyRow
from medcycle.objects.refs import add_ref
from medcycle.platform import Platform
from medcycle.settings import Settings
from medcycle.store.base import new_id, utcnow

BATCH = 100
Progress = Callable[[worker.Outcome], None]


@dataclass
class IngestSummary:
    source: str
    run_id: str
    ingested: int = 0
    duplicates: int = 0
    bytes: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    quarantined: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "run_id": self.run_id,
            "ingested": self.ingested,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "quarantined": self.quarantined,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }

    def counts(self) -> dict[str, int]:
        return {
            "ingested": self.ingested,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
            "quarantined": len(self.quarantined),
            "skipped": len(self.skipped),
        }


# -- worker processes -------------------------------------------------------------------------------
_CTX: worker.WorkerContext | None = None  # set only inside a worker process, by _init


def _context(
    settings: Settings,
    key: bytes,
    options: DeidOptions,
    source: str,
    modality: str | None,
    body_part: str | None,
    engine: Any = None,
) -> worker.WorkerContext:
    from medcycle.objects.factory import open_object_store
    from medcycle.store.engine import create_engine_for

    worker.quiet_third_parties()
    return worker.WorkerContext(
        store=open_object_store(settings.resolved_object_store_url, settings),
        engine=engine or create_engine_for(settings.resolved_database_url),
        pseudo=Pseudonymizer(key),
        options=options,
        source=source,
        max_bytes=settings.ingest_max_file_bytes,
        modality=modality,
        body_part=body_part,
    )


def _init(*args: Any) -> None:
    global _CTX
    _CTX = _context(*args)


def _run(item: InputFile) -> worker.Outcome:
    assert _CTX is not None, "worker not initialised"
    return worker.process(_CTX, item)


def _outcomes(
    ctx_args: tuple[Any, ...], items: Iterable[InputFile], jobs: int, inline_ctx: worker.WorkerContext | None
) -> Iterator[worker.Outcome]:
    if jobs <= 1:
        assert inline_ctx is not None
        for item in items:
            yield worker.process(inline_ctx, item)
        return
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init, initargs=ctx_args
    )
    try:
        pending: set[Future[worker.Outcome]] = set()
        it = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(pending) < jobs * 8:
                try:
                    pending.add(pool.submit(_run, next(it)))
                except StopIteration:
                    exhausted = True
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- the single writer ------------------------------------------------------------------------------
def _date(value: date | str | None) -> date | None:
    if isinstance(value, date):
        return value
    if not value or len(value) < 8:
        return None
    try:
        return datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None


class _Writer:
    def __init__(self, session: Session, source_id: str, run_id: str) -> None:
        self.session, self.source_id, self.run_id = session, source_id, run_id

    def write(self, out: worker.Outcome) -> str:
        """Catalog rows for one outcome, in a savepoint; returns the final status."""
        s = self.session
        if out.status in (worker.REJECTED, worker.SKIPPED):
            return out.status
        assert out.key is not None
        if out.status == worker.DUPLICATE or s.get(IngestFileRow, out.key) is not None:
            return worker.DUPLICATE
        rec = out.record
        try:
            with s.begin_nested():
                if s.get(InstanceRow, rec["uid"]) is not None:
                    s.add(
                        IngestFileRow(
                            key=out.key,
                            source_id=self.source_id,
                            outcome=worker.DUPLICATE,
                            instance_uid=rec["uid"],
                            run_id=self.run_id,
                            created_at=utcnow(),
                        )
                    )
                    return worker.DUPLICATE
                self._hierarchy(rec)
                stats = rec.get("stats", {})
                s.add(
                    InstanceRow(
                        uid=rec["uid"],
                        series_uid=rec["series_uid"],
                        digest=rec["digest"],
                        format=rec["format"],
                        state="quarantined" if out.status == worker.QUARANTINED else "ok",
                        quarantine_reason=out.reason if out.status == worker.QUARANTINED else None,
                        sop_class=rec.get("sop_class"),
                        transfer_syntax=rec.get("transfer_syntax"),
                        photometric=rec.get("photometric"),
                        bits_stored=rec.get("bits_stored"),
                        rows=rec.get("rows"),
                        columns=rec.get("columns"),
                        frames=rec.get("frames"),
                        instance_number=rec.get("instance_number"),
                        bytes=rec["bytes"],
                        ingest_run_id=self.run_id,
                        created_at=utcnow(),
                        **stats,
                    )
                )
                s.execute(
                    update(SeriesRow)
                    .where(SeriesRow.uid == rec["series_uid"])
                    .values(n_instances=SeriesRow.n_instances + 1, bytes=SeriesRow.bytes + rec["bytes"])
                )
                add_ref(s, rec["digest"], "instance", rec["uid"], size=rec["bytes"])
                s.add(
                    IngestFileRow(
                        key=out.key,
                        source_id=self.source_id,
                        outcome=out.status,
                        instance_uid=rec["uid"],
                        reason=out.reason,
                        run_id=self.run_id,
                        created_at=utcnow(),
                    )
                )
        except IntegrityError:
            # Another ingest wrote the same file or instance between our check and insert.
            return worker.DUPLICATE
        return out.status

    def _hierarchy(self, rec: dict[str, Any]) -> None:
        s = self.session
        if s.get(PatientRow, rec["patient_id"]) is None:
            s.add(PatientRow(id=rec["patient_id"], sex=rec.get("sex"), created_at=utcnow()))
        if s.get(StudyRow, rec["study_uid"]) is None:
            s.add(
                StudyRow(
                    uid=rec["study_uid"],
                    patient_id=rec["patient_id"],
                    source_id=self.source_id,
                    study_date=_date(rec.get("study_date")),
                    age_band=rec.get("age_band"),
                    created_at=utcnow(),
                )
            )
        if s.get(SeriesRow, rec["series_uid"]) is None:
            study_date = _date(rec.get("study_date"))
            s.add(
                SeriesRow(
                    uid=rec["series_uid"],
                    study_uid=rec["study_uid"],
                    source_id=self.source_id,
                    modality=rec.get("modality"),
                    body_part=rec.get("body_part"),
                    body_part_raw=rec.get("body_part_raw"),
                    laterality=rec.get("laterality"),
                    view_position=rec.get("view_position"),
                    manufacturer=rec.get("manufacturer"),
                    model=rec.get("model"),
                    year=study_date.year if study_date else None,
                    slice_thickness=rec.get("slice_thickness"),
                    pixel_spacing_row=rec.get("pixel_spacing_row"),
                    pixel_spacing_col=rec.get("pixel_spacing_col"),
                    kvp=rec.get("kvp"),
                    convolution_kernel=rec.get("convolution_kernel"),
                    field_strength=rec.get("field_strength"),
                    image_type=rec.get("image_type"),
                    n_instances=0,
                    bytes=0,
                    created_at=utcnow(),
                )
            )
        s.flush()


def ingest(
    platform: Platform,
    paths: list[Path],
    *,
    source: str,
    jobs: int = 1,
    options: DeidOptions | None = None,
    actor: str = "system",
    modality: str | None = None,
    body_part: str | None = None,
    progress: Progress | None = None,
) -> IngestSummary:
    """Ingest ``paths`` under ``source``; see the module docstring for the guarantees.

    Args:
        jobs: worker processes (1 = in this process).
        options: de-identification options; a source keeps the options it was first ingested with.
        modality, body_part: defaults for NIfTI/PNG/JPEG inputs, which carry neither.
    """
    options = options or DeidOptions()
    settings = platform.settings
    key = load_or_create_key(settings.resolved_deid_key_file)
    with platform.session() as session:
        src = ensure_source(session, source, options)
        run = IngestRunRow(id=new_id(), source_id=src.id, state="running", counts={}, actor=actor, started_at=utcnow())
        session.add(run)
        source_id, run_id = src.id, run.id
    summary = IngestSummary(source=source, run_id=run_id)
    items = iter_inputs(paths)
    started = time.monotonic()
    ctx_args = (settings, key, options, source, modality, body_part)
    inline = _context(*ctx_args, engine=platform.engine) if jobs <= 1 else None
    batch: list[worker.Outcome] = []

    def flush() -> None:
        with platform.session() as session:
            writer = _Writer(session, source_id, run_id)
            for out in batch:
                _account(summary, out, writer.write(out))
        batch.clear()

    for outcome in _outcomes(ctx_args, items, jobs, inline):
        if progress:
            progress(outcome)
        batch.append(outcome)
        if len(batch) >= BATCH:
            flush()
    flush()
    summary.seconds = time.monotonic() - started
    with platform.session() as session:
        row = session.get(IngestRunRow, run_id)
        assert row is not None
        row.state, row.counts, row.finished_at = "finished", summary.counts(), utcnow()
        audit.record(session, actor, "data.ingest", target_kind="source", target_id=source, counts=summary.counts())
    return summary


def _account(summary: IngestSummary, out: worker.Outcome, status: str) -> None:
    entry = {"path": out.display, "reason": out.reason or ""}
    if status == worker.INGESTED:
        summary.ingested += 1
        summary.bytes += int(out.record.get("bytes", 0))
    elif status == worker.QUARANTINED:
        summary.quarantined.append(entry)
    elif status == worker.DUPLICATE:
        summary.duplicates += 1
    elif status == worker.SKIPPED:
        summary.skipped.append(entry)
    else:
        summary.rejected.append(entry)
