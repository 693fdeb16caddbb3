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

import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcycle.auth import audit
from medcycle.catalog import ingest_worker as worker
from medcycle.catalog.deid import DeidOptions, Pseudonymizer
from medcycle.catalog.ingest_rows import CONFLICT, CONFLICT_REASON, CatalogWriter
from medcycle.catalog.inputs import InputFile, files_to_ingest
from medcycle.catalog.keys import load_or_create_key
from medcycle.catalog.sources import ensure_source
from medcycle.catalog.tables import IngestRunRow
from medcycle.objects.local import LocalObjectStore
from medcycle.platform import Platform
from medcycle.settings import Settings
from medcycle.store.base import new_id, utcnow

BATCH = 100  # outcomes per catalog transaction at first; doubles up to MAX_BATCH as the ingest goes on
MAX_BATCH = 800
TASK = 64  # files per task sent to a worker process (at most; see TASK_BYTES)
TASK_BYTES = 64 * 1024 * 1024  # a task ends past this many bytes: a worker holds its small files in memory
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
    """Worker start-up: import what every file needs now, not while the first batch waits; hold the native thread
    pools (BLAS, OpenMP) to one thread, as each worker process is one of ``--jobs`` sharing the cores."""
    import numpy  # noqa: F401
    import pydicom.pixels  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # a multithreaded BLAS spins after each call, on the other workers' cores

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
        UsageError: the paths hold no file to ingest (see :func:`~medcycle.catalog.inputs.files_to_ingest`);
            nothing is created: no source, ingest run, key or audit event (refused ingests are not audited).
    """
    items = files_to_ingest(paths)  # before anything is made: nothing to ingest is refused with no source, run or key
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
        conflicts: set[str] = set()
        with platform.session() as session:
            writer = CatalogWriter(session, source_id, run_id)
            for out, status in zip(batch, writer.write_batch(batch), strict=True):
                _account(summary, out, status)
                if status == CONFLICT and out.record.get("digest"):
                    conflicts.add(str(out.record["digest"]))
        if conflicts:
            _drop_unreferenced(platform, conflicts)
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


def _drop_unreferenced(platform: Platform, digests: set[str]) -> None:
    """Delete the stored objects of conflicting files (see CONFLICT) that no row references, now the rows are
    committed: a worker stores a file's object before the catalog decides, and such an object would otherwise
    stay until ``medcycle store gc``. No other row can want it: its bytes hold the conflicting UID, which the catalog
    holds with other content (only an instance deleted meanwhile and the same file ingested again concurrently
    could, and ``gc``'s grace period is for those)."""
    from sqlalchemy import select

    from medcycle.objects.tables import ObjectRefRow

    with platform.session() as session:
        wanted = set(session.scalars(select(ObjectRefRow.digest).where(ObjectRefRow.digest.in_(digests))))
    for digest in sorted(digests - wanted):
        platform.objects.delete(digest)


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
