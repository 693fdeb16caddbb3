"""``ingest``: files, folders, zips and DICOMDIR trees into the catalog, de-identified before storage.

Work is split in two: worker processes read, check, de-identify, measure and store each file
(:mod:`medcycle.catalog.ingest_worker`); this process is the single writer of catalog rows, in
batches. Idempotent and resumable: a file whose keyed content hash is already recorded is skipped,
objects are content-addressed, and the catalog rows of a batch are written in one transaction — so a
``kill -9`` at any moment followed by a re-run ends with nothing missing and nothing doubled.

Durability: a row is never committed before the object it points at is on disk, as when each put waited
for its fsyncs, at a fraction of the cost (two fsyncs a file, one after the other, cost more than
de-identifying it). On a local folder store where ``syncfs`` reports write-back errors (Linux 5.8+), the
workers put without any fsync and this process, before it commits each batch of rows, makes the store's
file system durable with one ``syncfs`` (:class:`~medcycle.objects.local.FileSystemSync`, opened before
the first put): it covers every object the workers wrote, and no worker waits for the disk. Elsewhere each
worker makes its task's objects durable before it returns their outcomes (``defer_sync``: the fsyncs run
in the background meanwhile). ``progress`` may hear of a file before its object is durable.

The worker processes are started once per process and kept for later ingests (``jobs`` >= 2): starting
them (a fresh interpreter importing pydicom, numpy and SQLAlchemy each) takes seconds on a small machine,
longer than ingesting a few thousand files. Each batch carries what its ingest call needs (settings,
de-identification key and options, source), and a worker sets itself up once per call.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.catalog import ingest_worker as worker
from medcycle.catalog.deid import DeidOptions, Pseudonymizer
from medcycle.catalog.inputs import InputFile, iter_inputs
from medcycle.catalog.keys import load_or_create_key
from medcycle.catalog.sources import ensure_source
from medcycle.catalog.tables import IngestFileRow, IngestRunRow, InstanceRow, PatientRow, SeriesRow, StudyRow
from medcycle.errors import UsageError
from medcycle.objects.local import LocalObjectStore
from medcycle.objects.refs import add_ref
from medcycle.objects.tables import ObjectRefRow
from medcycle.platform import Platform
from medcycle.settings import Settings
from medcycle.store.base import new_id, utcnow
from medcycle.store.bulk import insert_many

BATCH = 100  # outcomes per catalog transaction at first; doubles up to MAX_BATCH as the ingest goes on
MAX_BATCH = 800
STAT_COLUMNS = ("p01", "p05", "p50", "p95", "p99", "mean", "std", "saturated_fraction", "air_fraction")
TASK = 64  # files per task sent to a worker process (at most; see TASK_BYTES)
TASK_BYTES = 64 * 1024 * 1024  # a task ends past this many bytes: a worker holds its small files in memory
Progress = Callable[[worker.Outcome], None]
#: A file whose SOP Instance UID the catalog holds with other content (another transfer syntax, a device that
#: reuses UIDs): not stored, the catalogued instance is kept, and the file is named in ``conflicts``.
CONFLICT = "conflict"
CONFLICT_REASON = ("same SOP Instance UID as an instance already catalogued, different content; not stored "
                   "(the catalogued instance is kept)")


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
    conflicts: list[dict[str, str]] = field(default_factory=list)  # see CONFLICT; not counted as duplicates
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
            "conflicts": self.conflicts,
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
            "conflicts": len(self.conflicts),
        }


# -- worker processes -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """What the workers of one ingest call need; sent with every task (a worker sets up once per ``token``)."""

    token: str
    settings: Settings
    key: bytes
    options: DeidOptions
    source: str
    modality: str | None
    body_part: str | None
    writer_syncs: bool = False  # the writer makes the store's file system durable before each commit


def _context(job: Job, engine: Any = None) -> worker.WorkerContext:
    from medcycle.objects.factory import open_object_store
    from medcycle.store.engine import create_engine_for

    worker.quiet_third_parties()
    settings = job.settings
    store = open_object_store(settings.resolved_object_store_url, settings)
    if isinstance(store, LocalObjectStore):
        store.defer_sync = True  # durable once per batch before rows point at the objects (module docstring)
        if job.writer_syncs:
            store.fsync = False  # the writer's syncfs covers these puts: nothing to keep pending or wait for
    return worker.WorkerContext(
        store=store,
        engine=engine or create_engine_for(settings.resolved_database_url),
        pseudo=Pseudonymizer(job.key),
        options=job.options,
        source=job.source,
        max_bytes=settings.ingest_max_file_bytes,
        modality=job.modality,
        body_part=job.body_part,
    )


_CTX: tuple[str, worker.WorkerContext] | None = None  # inside a worker process: the current job's context


def _warm() -> None:
    """Worker start-up: import what every file needs now, not while the first batch waits."""
    import numpy  # noqa: F401
    import pydicom.pixels  # noqa: F401

    worker.quiet_third_parties()


def _run(job: Job, items: list[InputFile]) -> list[worker.Outcome]:
    global _CTX
    if _CTX is None or _CTX[0] != job.token:
        if _CTX is not None and _CTX[1].engine is not None:
            _CTX[1].engine.dispose()
        _CTX = (job.token, _context(job))
    return worker.process_batch(_CTX[1], items)


_POOL_LOCK = threading.Lock()
_POOLS: dict[tuple[int, int], ProcessPoolExecutor] = {}  # (process id, jobs) -> the worker processes kept


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """The ``jobs`` worker processes of this process, started on first use and kept for later ingests."""
    key = (os.getpid(), jobs)  # a forked child never uses its parent's workers
    with _POOL_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ProcessPoolExecutor(
                max_workers=jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_warm
            )
        return pool


def start_workers(jobs: int) -> None:
    """Start the worker processes now and wait until they are ready (e.g. while a server starts)."""
    if jobs > 1:
        pool = worker_pool(jobs)
        for fut in [pool.submit(_warm) for _ in range(jobs * 2)]:
            fut.result()


def shutdown_workers() -> None:
    """Stop the kept worker processes (they also stop when this process exits)."""
    with _POOL_LOCK:
        mine = [k for k in _POOLS if k[0] == os.getpid()]
        pools = [_POOLS.pop(k) for k in mine]
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


def _discard_pool(pool: ProcessPoolExecutor) -> None:
    with _POOL_LOCK:
        for k in [k for k, v in _POOLS.items() if v is pool]:
            del _POOLS[k]
    pool.shutdown(wait=False, cancel_futures=True)


def _tasks(items: Iterable[InputFile]) -> Iterator[list[InputFile]]:
    """The inputs in tasks of at most TASK files and, past its first file, TASK_BYTES bytes. A task's objects are
    made durable together (one wait for their fsyncs): larger tasks wait less often."""
    chunk: list[InputFile] = []
    size = 0
    for item in items:
        if chunk and (len(chunk) >= TASK or size + item.size > TASK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item.size
    if chunk:
        yield chunk


def _outcomes(
    job: Job, items: Iterable[InputFile], jobs: int, inline_ctx: worker.WorkerContext | None
) -> Iterator[worker.Outcome]:
    tasks = _tasks(items)
    if jobs <= 1:
        assert inline_ctx is not None
        for chunk in tasks:
            yield from worker.process_batch(inline_ctx, chunk)
        return
    pool = worker_pool(jobs)
    pending: set[Future[list[worker.Outcome]]] = set()
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < jobs * 4:
                task = next(tasks, None)
                if task is None:
                    exhausted = True
                    break
                pending.add(pool.submit(_run, job, task))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield from fut.result()
    except BrokenProcessPool:
        _discard_pool(pool)  # a worker died (killed, out of memory): the next ingest starts new ones
        raise
    finally:
        for fut in pending:
            fut.cancel()
        if pending:
            wait(pending)  # no batch of this call is still running when it returns


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

    def write_batch(self, outs: list[worker.Outcome]) -> list[str]:
        """Catalog rows for a batch of outcomes with a handful of statements for all of them; their final
        statuses. Should a concurrent ingest have written one of the same files or instances meanwhile, the
        batch is rolled back and written outcome by outcome (:meth:`write`), which settles each conflict.

        A file with a catalogued instance's UID but other content is a :data:`CONFLICT`, recorded as such, so
        that a re-run, which skips the file as already seen, names it again."""
        try:
            with self.session.begin_nested():
                statuses = self._bulk(outs)
        except IntegrityError:
            statuses = [self.write(out) for out in outs]
        return self._known_conflicts(outs, statuses)

    def _known_conflicts(self, outs: list[worker.Outcome], statuses: list[str]) -> list[str]:
        """``statuses`` with each duplicate that an earlier ingest recorded as a conflict made a conflict."""
        seen = {str(out.key) for out, status in zip(outs, statuses, strict=True)
                if status == worker.DUPLICATE and out.key is not None}
        if not seen:
            return statuses
        conflicts = set(self.session.scalars(select(IngestFileRow.key).where(
            IngestFileRow.key.in_(seen), IngestFileRow.outcome == CONFLICT)))
        return [CONFLICT if status == worker.DUPLICATE and out.key in conflicts else status
                for out, status in zip(outs, statuses, strict=True)]

    def _bulk(self, outs: list[worker.Outcome]) -> list[str]:
        s = self.session
        statuses = [out.status for out in outs]
        todo = [i for i, out in enumerate(outs) if out.status in (worker.INGESTED, worker.QUARANTINED)]
        if not todo:
            return statuses

        def existing(column: Any, values: set[str]) -> set[str]:
            return set(s.scalars(select(column).where(column.in_(values)))) if values else set()

        recs = {i: outs[i].record for i in todo}
        keys = existing(IngestFileRow.key, {str(outs[i].key) for i in todo})
        uids: dict[str, str] = {  # uid -> digest of the instances in the catalog or this batch
            uid: digest for uid, digest in s.execute(select(InstanceRow.uid, InstanceRow.digest).where(
                InstanceRow.uid.in_({r["uid"] for r in recs.values()})))}
        patients = existing(PatientRow.id, {r["patient_id"] for r in recs.values()})
        studies = existing(StudyRow.uid, {r["study_uid"] for r in recs.values()})
        series = existing(SeriesRow.uid, {r["series_uid"] for r in recs.values()})
        refs = existing(ObjectRefRow.owner_id, {r["uid"] for r in recs.values()})  # owner kind checked below
        now = utcnow()
        # Rows as plain values, inserted with one executemany a table (no ORM objects: building those cost more
        # than the inserts themselves), parents first: each table's foreign keys point at the ones before.
        hierarchy: tuple[list[Any], list[Any], list[Any]] = ([], [], [])  # new patients, studies, series
        instances: list[dict[str, Any]] = []
        new_refs: list[dict[str, Any]] = []
        files: list[dict[str, Any]] = []
        grow: dict[str, list[int]] = {}  # series uid -> [instances, bytes] added
        for i in todo:
            out, rec = outs[i], recs[i]
            key = str(out.key)
            if key in keys:
                statuses[i] = worker.DUPLICATE
                continue
            keys.add(key)
            if rec["uid"] in uids:
                status = worker.DUPLICATE if uids[rec["uid"]] == rec["digest"] else CONFLICT
                files.append(self._file_values(key, status, rec["uid"], CONFLICT_REASON if status == CONFLICT
                                               else None, now))
                statuses[i] = status
                continue
            uids[rec["uid"]] = rec["digest"]
            self._new_hierarchy(rec, (patients, studies, series), hierarchy, now)
            instances.append(self._instance_values(out, rec, now))
            counts = grow.setdefault(rec["series_uid"], [0, 0])
            counts[0] += 1
            counts[1] += rec["bytes"]
            if rec["uid"] not in refs:
                new_refs.append({"digest": rec["digest"], "owner_kind": "instance", "owner_id": rec["uid"],
                                 "size": rec["bytes"], "created_at": now})
            files.append(self._file_values(key, out.status, rec["uid"], out.reason, now))
        if refs:  # a reference left by an instance since deleted: add_ref checks exactly (rare)
            for i in todo:
                rec = recs[i]
                if rec["uid"] in refs and statuses[i] == outs[i].status:
                    add_ref(s, rec["digest"], "instance", rec["uid"], size=rec["bytes"])
            s.flush()
        conn = s.connection()
        for model, values in ((PatientRow, hierarchy[0]), (StudyRow, hierarchy[1]), (SeriesRow, hierarchy[2]),
                              (InstanceRow, instances), (ObjectRefRow, new_refs), (IngestFileRow, files)):
            if values:
                insert_many(conn, cast(Table, model.__table__), values)
        if grow:
            table = cast(Table, SeriesRow.__table__)
            conn.execute(
                update(table)
                .where(table.c.uid == bindparam("s_uid"))
                .values(n_instances=table.c.n_instances + bindparam("s_n"), bytes=table.c.bytes + bindparam("s_b")),
                [{"s_uid": uid, "s_n": n, "s_b": b} for uid, (n, b) in grow.items()],
            )
        return statuses

    def _file_values(self, key: str, outcome: str, uid: str, reason: str | None, now: datetime) -> dict[str, Any]:
        return {"key": key, "source_id": self.source_id, "outcome": outcome, "instance_uid": uid, "reason": reason,
                "run_id": self.run_id, "created_at": now}

    def _instance_values(self, out: worker.Outcome, rec: dict[str, Any], now: datetime) -> dict[str, Any]:
        values = {
            "uid": rec["uid"],
            "series_uid": rec["series_uid"],
            "digest": rec["digest"],
            "format": rec["format"],
            "state": "quarantined" if out.status == worker.QUARANTINED else "ok",
            "quarantine_reason": out.reason if out.status == worker.QUARANTINED else None,
            "sop_class": rec.get("sop_class"),
            "transfer_syntax": rec.get("transfer_syntax"),
            "photometric": rec.get("photometric"),
            "bits_stored": rec.get("bits_stored"),
            "rows": rec.get("rows"),
            "columns": rec.get("columns"),
            "frames": rec.get("frames"),
            "instance_number": rec.get("instance_number"),
            "bytes": rec["bytes"],
            "ingest_run_id": self.run_id,
            "created_at": now,
        }
        stats = rec.get("stats") or {}
        values.update({name: stats.get(name) for name in STAT_COLUMNS})
        return values

    def _instance(self, out: worker.Outcome, rec: dict[str, Any], now: datetime) -> InstanceRow:
        return InstanceRow(**self._instance_values(out, rec, now))

    def _new_hierarchy(
        self, rec: dict[str, Any], have: tuple[set[str], set[str], set[str]],
        new: tuple[list[Any], list[Any], list[Any]], now: datetime,
    ) -> None:
        """Add to ``new`` the values of the patient, study and series rows ``rec`` needs that are not in ``have``
        (the ids in the catalog or already added), and their ids to ``have``."""
        patients, studies, series = have
        if rec["patient_id"] not in patients:
            patients.add(rec["patient_id"])
            new[0].append({"id": rec["patient_id"], "sex": rec.get("sex"), "created_at": now})
        if rec["study_uid"] not in studies:
            studies.add(rec["study_uid"])
            new[1].append(self._study_values(rec, now))
        if rec["series_uid"] not in series:
            series.add(rec["series_uid"])
            new[2].append(self._series_values(rec, now))

    def _study_values(self, rec: dict[str, Any], now: datetime) -> dict[str, Any]:
        return {"uid": rec["study_uid"], "patient_id": rec["patient_id"], "source_id": self.source_id,
                "study_date": _date(rec.get("study_date")), "age_band": rec.get("age_band"), "created_at": now}

    def _series_values(self, rec: dict[str, Any], now: datetime) -> dict[str, Any]:
        study_date = _date(rec.get("study_date"))
        return {
            "uid": rec["series_uid"],
            "study_uid": rec["study_uid"],
            "source_id": self.source_id,
            "modality": rec.get("modality"),
            "body_part": rec.get("body_part"),
            "body_part_raw": rec.get("body_part_raw"),
            "laterality": rec.get("laterality"),
            "view_position": rec.get("view_position"),
            "manufacturer": rec.get("manufacturer"),
            "model": rec.get("model"),
            "year": study_date.year if study_date else None,
            "slice_thickness": rec.get("slice_thickness"),
            "pixel_spacing_row": rec.get("pixel_spacing_row"),
            "pixel_spacing_col": rec.get("pixel_spacing_col"),
            "kvp": rec.get("kvp"),
            "convolution_kernel": rec.get("convolution_kernel"),
            "field_strength": rec.get("field_strength"),
            "image_type": rec.get("image_type"),
            "n_instances": 0,
            "bytes": 0,
            "created_at": now,
        }

    def _series(self, rec: dict[str, Any], now: datetime) -> SeriesRow:
        return SeriesRow(**self._series_values(rec, now))

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
                there = s.get(InstanceRow, rec["uid"])
                if there is not None:
                    status = worker.DUPLICATE if there.digest == rec["digest"] else CONFLICT
                    s.add(
                        IngestFileRow(
                            key=out.key,
                            source_id=self.source_id,
                            outcome=status,
                            instance_uid=rec["uid"],
                            reason=CONFLICT_REASON if status == CONFLICT else None,
                            run_id=self.run_id,
                            created_at=utcnow(),
                        )
                    )
                    return status
                self._hierarchy(rec)
                s.add(self._instance(out, rec, utcnow()))
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
        now = utcnow()
        if s.get(PatientRow, rec["patient_id"]) is None:
            s.add(PatientRow(id=rec["patient_id"], sex=rec.get("sex"), created_at=now))
        if s.get(StudyRow, rec["study_uid"]) is None:
            s.add(StudyRow(**self._study_values(rec, now)))
        if s.get(SeriesRow, rec["series_uid"]) is None:
            s.add(self._series(rec, now))
        s.flush()


ACCEPTED = ("DICOM files (any name), NIfTI (.nii, .nii.gz, .hdr/.img pairs), PNG and JPEG images, given as files, "
            "folders (walked with their sub-folders), zip archives or DICOMDIR trees")


def _hidden(item: InputFile, named: set[str]) -> bool:
    """A file found in a folder or a zip archive under a name starting with '.', or inside a folder named so
    (``.gitkeep``, ``.git/…``): alone, it is no data to ingest. A file named on the command line never is, and
    neither is an input that cannot be read (its reason is reported)."""
    if item.problem is not None or (item.member is None and item.path in named):
        return False
    return any(part.startswith(".") for part in item.rel.split("/"))


def _inputs(paths: list[Path]) -> Iterator[InputFile]:
    """The input files of ``paths`` (:func:`~medcycle.catalog.inputs.iter_inputs`), once it is known there is one.

    Raises:
        NotFound: a path does not exist.
        UsageError: the paths hold no file to ingest: empty folders or zip archives, sub-folders without files,
            or only hidden files and the system files the walk ignores (``.DS_Store``, ``Thumbs.db``, ``._*``).
            A folder whose files are all rejected later (a text file) is not empty: it is ingested and reported.
    """
    items = iter_inputs(paths)
    named = {str(p) for p in paths}
    hidden: list[InputFile] = []
    for item in items:
        if not _hidden(item, named):
            return itertools.chain(hidden, [item], items)
        hidden.append(item)
    shown = ", ".join(str(p) for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    found = (f"only {len(hidden)} hidden file(s) (names starting with '.', e.g. {Path(hidden[0].rel).name})"
             if hidden else "no file (empty folders or archives, or sub-folders without files)")
    raise UsageError(
        f"nothing to ingest in {shown or 'the paths given (none)'}: {found}; nothing was created",
        hint=f"Give the files to ingest: {ACCEPTED}. Check the path (`ls -la`), or copy the images there first.",
        paths=[str(p) for p in paths[:100]], hidden_files=len(hidden),
    )


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

    Raises:
        NotFound: a path does not exist.
        UsageError: the paths hold no file to ingest (see :func:`_inputs`); nothing is created: no source, no
            ingest run, no key, no audit event (refused ingests are not audited).
    """
    items = _inputs(paths)  # before anything is made: nothing to ingest is refused with no source, run or key
    options = options or DeidOptions()
    settings = platform.settings
    key = load_or_create_key(settings.resolved_deid_key_file)
    with platform.session() as session:
        src = ensure_source(session, source, options)
        run = IngestRunRow(id=new_id(), source_id=src.id, state="running", counts={}, actor=actor, started_at=utcnow())
        session.add(run)
        source_id, run_id = src.id, run.id
    summary = IngestSummary(source=source, run_id=run_id)
    started = time.monotonic()
    store = platform.objects
    fs_sync = store.file_system_sync() if isinstance(store, LocalObjectStore) else None  # before the first put
    job = Job(uuid.uuid4().hex, settings, key, options, source, modality, body_part, fs_sync is not None)
    batch: list[worker.Outcome] = []
    size = BATCH

    def flush() -> None:
        if not batch:
            return
        if fs_sync is not None:
            fs_sync()  # every object of the batch, whichever worker put it, is on disk before a row points at it
        with platform.session() as session:
            writer = _Writer(session, source_id, run_id)
            for out, status in zip(batch, writer.write_batch(batch), strict=True):
                _account(summary, out, status)
        batch.clear()

    try:
        inline = _context(job, engine=platform.engine) if jobs <= 1 else None
        for outcome in _outcomes(job, items, jobs, inline):
            if progress:
                progress(outcome)
            batch.append(outcome)
            if len(batch) >= size:
                flush()
                size = min(size * 2, MAX_BATCH)
        flush()
    finally:
        if fs_sync is not None:
            fs_sync.close()
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
    elif status == CONFLICT:
        summary.conflicts.append({"path": out.display, "reason": CONFLICT_REASON})
    elif status == worker.SKIPPED:
        summary.skipped.append(entry)
    else:
        summary.rejected.append(entry)
