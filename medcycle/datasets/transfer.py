"""Move versions between the object store and a machine: ``pull``, ``push`` and ``status``.

``pull`` materialises exactly one version (or a split/query subset of it) in a folder (see
:mod:`medcycle.datasets.layout`). Objects travel from ``platform.objects`` into the local cache
(``settings.cache_dir``, itself a content-addressed store) in parallel, each verified against its digest
while it streams and written atomically, so an interrupted pull resumes where it stopped: objects already
cached are not fetched again. Files are then hard-linked from the cache into the folder. When the object
store is a local folder it is used as the cache (no copy at all); its objects are re-hashed before they
are first linked, so a damaged object is named rather than handed to training.

A label-only change between versions moves no image bytes: only the new manifest is fetched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.catalog.tables import InstanceRow
from medcycle.datasets import layout
from medcycle.datasets.cards import render_markdown, version_card
from medcycle.datasets.manifest import Manifest, ManifestItem
from medcycle.datasets.splits import UNSPLIT
from medcycle.datasets.tables import DatasetRow, DatasetVersionItemRow, LabelSetRow
from medcycle.datasets.versions import resolve, version_info
from medcycle.errors import MedcycleError, NotFound, UsageError
from medcycle.objects.base import DIGEST_RE, ObjectInfo, ObjectStore
from medcycle.objects.local import LocalObjectStore, link_unnamed, unnamed_file
from medcycle.platform import Platform

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

CATALOG_FIELDS = ("body_part", "laterality", "view_position", "manufacturer", "model", "year", "study_date", "sex",
                  "age_band", "rows", "columns", "frames", "photometric", "bits_stored", "pixel_spacing",
                  "slice_thickness", "kvp", "convolution_kernel", "field_strength", "transfer_syntax")


@dataclass(frozen=True, slots=True)
class TransferEvent:
    """Progress: ``start`` announces a phase's totals; otherwise the counts are increments."""

    phase: str  # fetch, link, upload, check
    objects: int
    bytes: int
    start: bool = False


Progress = Callable[[TransferEvent], None]


class _Tally:
    """Progress increments gathered on the calling thread and reported every ``STEP`` seconds and at the end:
    an event per object costs more than placing a small object, and a bar cannot show more anyway."""

    STEP = 0.1

    def __init__(self, phase: str, emit: Progress) -> None:
        self.phase, self.emit = phase, emit
        self.objects = self.bytes = 0
        self.due = time.monotonic() + self.STEP

    def add(self, size: int) -> None:
        self.objects += 1
        self.bytes += size
        if self.objects >= 4096 or time.monotonic() >= self.due:
            self.flush()

    def flush(self) -> None:
        if self.objects:
            self.emit(TransferEvent(self.phase, self.objects, self.bytes))
            self.objects = self.bytes = 0
        self.due = time.monotonic() + self.STEP


@dataclass
class PullReport:
    dataset: str
    version: str
    ref: str
    dest: str
    items: int = 0
    objects: int = 0
    bytes_total: int = 0
    fetched_objects: int = 0
    fetched_bytes: int = 0
    cached_objects: int = 0  # already in the local cache (or the store is local)
    linked: int = 0
    copied: int = 0
    unchanged: int = 0
    removed: int = 0
    manifest_bytes: int = 0
    seconds: float = 0.0
    source: str = "cache"  # cache, or local-store when linking straight from a local object store

    @property
    def fetch_throughput(self) -> float:
        """Bytes per second fetched from the object store (0 when nothing was fetched)."""
        return self.fetched_bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def throughput(self) -> float:
        """Bytes of the version materialised per second, however they got there."""
        return self.bytes_total / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fetch_throughput": self.fetch_throughput, "throughput": self.throughput}


@dataclass
class PushReport:
    dataset: str
    version: str
    objects: int = 0
    present: int = 0
    uploaded_objects: int = 0
    uploaded_bytes: int = 0
    missing: list[str] = field(default_factory=list)  # in neither the store nor the cache
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class StatusReport:
    dataset: str
    version: str
    items: int = 0
    objects: int = 0
    bytes_total: int = 0
    local: int = 0  # objects on this machine (cache, or the local store)
    missing_locally: int = 0
    missing_bytes: int = 0
    missing_in_store: list[str] = field(default_factory=list)
    folder: dict[str, int] | None = None  # with --to: present, missing, different

    @property
    def complete(self) -> bool:
        folder_ok = self.folder is None or (self.folder["missing"] == 0 and self.folder["different"] == 0)
        return self.missing_locally == 0 and folder_ok

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


class PullCache(LocalObjectStore):
    """The machine's object cache: ``ROOT/sha256/ab/<digest>``, fsync off (it can always be refetched).

    One level of 256 shard folders (as git and DVC do) rather than the store's two: a fresh pull of 10,000
    objects creates at most 256 folders, not ~9,500, and a ``mkdir`` costs as much as writing a small file.
    Objects that a cache of the earlier two-level layout holds are moved into place when first looked up.
    """

    def path_for(self, digest: str) -> Path:
        return self.data_dir / digest[:2] / digest

    def file(self, digest: str) -> str:
        """``path_for`` as a string, without pathlib's cost (a pull looks up every object a few times)."""
        return f"{self.data_dir}/{digest[:2]}/{digest}"

    def exists(self, digest: str) -> bool:
        return super().exists(digest) or self.adopt(digest)

    def adopt(self, digest: str) -> bool:
        """Move ``digest`` from the two-level layout (``ab/cd/<digest>``) into its place; whether it was there."""
        old = LocalObjectStore.path_for(self, digest)
        if not old.is_file():
            return False
        new = self.path_for(digest)
        new.parent.mkdir(exist_ok=True)
        try:
            os.replace(old, new)  # same inode: links already made into pull folders stay links
        except FileNotFoundError:  # another process moved it first
            return new.is_file()
        return True

    def list(self) -> Iterator[ObjectInfo]:
        for shard in sorted(self.data_dir.iterdir()) if self.data_dir.exists() else []:
            if shard.is_dir():
                with os.scandir(shard) as entries:
                    for entry in entries:
                        if entry.is_file() and DIGEST_RE.match(entry.name):
                            st = entry.stat()
                            yield ObjectInfo(entry.name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
        yield from LocalObjectStore.list(self)  # objects still in the earlier two-level layout


def open_cache(platform: Platform) -> PullCache:
    """The machine's object cache (see :class:`PullCache`)."""
    return PullCache(platform.settings.resolved_cache_dir, workers=platform.settings.io_workers, fsync=False)


def _local_store(platform: Platform) -> tuple[LocalObjectStore, bool]:
    store = platform.objects
    if isinstance(store, LocalObjectStore):
        return store, True
    return open_cache(platform), False


def _parallel(fn: Callable[[T], R], items: Sequence[T], workers: int, done: Callable[[T, R], None]) -> None:
    """Run ``fn`` over ``items`` on ``workers`` threads; ``done`` runs on this thread; the first error stops it.

    Items travel in small batches (one future per batch, not per item), so tens of thousands of small
    objects do not drown in scheduling overhead.
    """
    if not items:
        return
    if workers <= 1 or len(items) == 1:
        for it in items:
            done(it, fn(it))
        return
    size = max(1, min(64, len(items) // (workers * 4)))
    batches = [items[i : i + size] for i in range(0, len(items), size)]

    def run(batch: Sequence[T]) -> list[R]:
        return [fn(it) for it in batch]

    with ThreadPoolExecutor(max_workers=min(workers, len(batches))) as pool:
        futures = {pool.submit(run, batch): batch for batch in batches}
        try:
            for fut in as_completed(futures):
                for it, result in zip(futures[fut], fut.result(), strict=True):
                    done(it, result)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


class _Fetcher:
    """Copies objects from the store into the cache, each verified in the same pass and made visible whole.

    Each object is written to an *unnamed* file in its shard folder (``O_TMPFILE``) and given its name with
    one ``linkat`` once its digest checked out: one directory operation per object instead of a temp name
    plus a rename, and a fetch that fails or is killed leaves nothing behind (the kernel frees the unnamed
    file). Where unnamed files are not supported (other systems, some file systems) a temp file named after
    the digest, process and thread is written next to the object's place and renamed: parallel fetches do
    not queue on one temp folder's lock, and a ``.part`` left by an interrupted pull is replaced by the next
    fetch of the object by the same process and thread id. Either way a corrupt object never gets its name.

    The cache is not fsynced: its objects can always be fetched again, and a torn one (after a crash of the
    machine) is caught by its size on the next pull, or by its digest with ``verify``.
    """

    def __init__(self, source: ObjectStore, cache: LocalObjectStore) -> None:
        self.source, self.cache = source, cache
        self.folders: set[str] = set()  # shard folders known to exist
        self.unnamed = True

    def __call__(self, digest: str) -> int:
        """Fetch ``digest`` into the cache; returns its size."""
        final = self.cache.file(digest)
        parent = final.rpartition("/")[0]
        if parent not in self.folders:
            os.makedirs(parent, exist_ok=True)
            self.folders.add(parent)
        if self.unnamed:
            fd = unnamed_file(parent)
            if fd is None:
                self.unnamed = False
            else:
                try:
                    size = self.source.copy_into(digest, fd)
                    link_unnamed(fd, final)
                    return size
                except FileExistsError:  # another pull fetched it meanwhile: the same verified bytes
                    return size
                finally:
                    os.close(fd)
        return self._named(digest, final, parent)

    def _named(self, digest: str, final: str, parent: str) -> int:
        tmp = f"{parent}/.{digest}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileExistsError:  # left by an interrupted pull
            os.unlink(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            try:
                size = self.source.copy_into(digest, fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return size


def _files(local: LocalObjectStore, digests: Iterable[str]) -> dict[str, str]:
    """The file of each object on this machine, as strings (pathlib costs ~10 µs a path)."""
    return {d: local.file(d) for d in digests}


def _cached(cache: LocalObjectStore, digest: str, size: int, verify: bool, path: str) -> os.stat_result | None:
    """The cached object's ``stat`` when it is there with the right size (and bytes, with ``verify``)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not (isinstance(cache, PullCache) and cache.adopt(digest)):
            return None
        st = os.stat(path)
    if st.st_size != size or (verify and layout.hash_file(path) != digest):
        os.unlink(path)  # damaged cache entry: fetch it again
        return None
    return st


def _manifest(source: ObjectStore, cache: LocalObjectStore, is_store: bool, version_id: str) -> tuple[Manifest, int]:
    if not is_store and not cache.exists(version_id):
        _Fetcher(source, cache)(version_id)
    data = cache.get(version_id)  # verified read
    return Manifest.from_bytes(data, expected_digest=version_id), len(data)


def _select(
    session: Session, version_id: str, manifest: Manifest, split: str | None, query: str | None
) -> list[ManifestItem]:
    items = list(manifest.items)
    if split is not None:
        names = {i.split or UNSPLIT for i in items}
        if split not in names:
            raise UsageError(f"the version has no split {split!r}", hint=f"Splits: {', '.join(sorted(names))}.")
        items = [i for i in items if (i.split or UNSPLIT) == split]
    if query is not None:
        from medcycle.catalog.query import select_matching

        in_version = select(DatasetVersionItemRow.instance_uid).where(DatasetVersionItemRow.version_id == version_id)
        stmt = select_matching(query, InstanceRow.uid, include_quarantined=True).where(InstanceRow.uid.in_(in_version))
        wanted = set(session.scalars(stmt))
        items = [i for i in items if i.uid in wanted]
    return items


def _catalog_fields(session: Session, version_id: str, uids: set[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Catalog fields (body part, scanner, geometry, …) of the pulled items, in one query."""
    from medcycle.catalog.query import FIELDS, select_matching

    fields = [f for f in CATALOG_FIELDS if f in FIELDS]
    columns = [InstanceRow.uid, *(FIELDS[f].column.label(f) for f in fields)]
    in_version = select(DatasetVersionItemRow.instance_uid).where(DatasetVersionItemRow.version_id == version_id)
    stmt = select_matching(None, *columns, include_quarantined=True).where(InstanceRow.uid.in_(in_version))
    out: dict[str, dict[str, Any]] = {}
    for uid, *values in session.execute(stmt):
        if uid in uids:
            out[uid] = {f: v.isoformat() if isinstance(v, date) else v for f, v in zip(fields, values, strict=True)}
    return out, fields


def pull(
    platform: Platform, ref: str, dest: Path, *, split: str | None = None, query: str | None = None,
    workers: int | None = None, progress: Progress | None = None, verify: bool = False,
    actor: str = "system", via: str = "library",
) -> PullReport:
    """Materialise version ``ref`` (or its ``split`` / catalog ``query`` subset) under ``dest``.

    Args:
        workers: parallel transfers (default: setting ``io_workers``).
        progress: called with :class:`TransferEvent` s on this thread.
        verify: re-hash objects already on this machine instead of trusting their size and links.

    Raises:
        IntegrityError: an object's bytes do not match its digest (the error names the digest).
        NotFound: the version, or an object it lists, does not exist.
    """
    started = time.monotonic()
    workers = workers or platform.settings.io_workers
    emit = progress or (lambda _e: None)
    dest = layout.check_dest(Path(dest))
    fresh = layout.is_empty(dest)  # nothing to compare with: every file is linked without a look first
    with platform.session() as session:
        row = resolve(session, ref)
        info = version_info(session, row)
        card_md = render_markdown(version_card(session, row))
    report = PullReport(dataset=info.dataset, version=info.id, ref=ref, dest=str(dest))
    try:
        local, is_store = _local_store(platform)
        report.source = "local-store" if is_store else "cache"
        manifest, report.manifest_bytes = _manifest(platform.objects, local, is_store, info.id)
        with platform.session() as session:
            items = _select(session, info.id, manifest, split, query)
        sizes = {i.digest: i.bytes for i in items}
        report.items, report.objects, report.bytes_total = len(items), len(sizes), sum(sizes.values())
        wanted = [(layout.relative_path(i), i) for i in items]
        stale = layout.previous_paths(dest) - {rel for rel, _ in wanted}
        header = {"dataset": info.dataset, "version": info.id, "seq": info.seq, "tags": list(info.tags),
                  "label_set": manifest.label_set, "split_policy": manifest.split_policy,
                  "subset": {"split": split, "query": query}, "items_in_version": len(manifest.items)}

        def render() -> dict[str, bytes]:
            with platform.session() as session:
                catalog, fields = _catalog_fields(session, info.id, {i.uid for i in items})
            return layout.render_outputs(header, wanted, catalog, fields, card_md)

        files = _files(local, sizes)
        # First what is there already: a stat per object and per file, on this thread. (Done while the side
        # thread below renders, each of those calls would wait for the GIL after it returns: 10x slower.)
        todo, known = ([], {}) if is_store else _look_in_cache(local, sizes, files, verify)
        report.cached_objects = len(sizes) - len(todo)
        placing, unchanged = _sort_out(dest, wanted, files, known, look=not fresh and not verify)
        # The manifests (catalog fields of every item, JSON, CSV) are made on a side thread while the objects
        # move: for small files that costs as much as moving them. They are written last, once all is in place.
        # The layout's folders (~0.6 per file for 5-image series) are made meanwhile too.
        with ThreadPoolExecutor(max_workers=2) as side:
            rendered = side.submit(render)
            folders = side.submit(layout.make_folders, dest, [rel for rel, _ in placing]) if placing else None
            try:
                if todo:
                    _fetch_missing(platform.objects, local, todo, sizes, report, workers=workers, emit=emit)
                _place_all(dest, placing, unchanged, files, report, workers=workers, verify_source=is_store,
                           recheck=verify, emit=emit, fresh=fresh, folders=folders)
            except BaseException:
                rendered.cancel()
                if folders is not None and not folders.cancel() and folders.exception() is None:
                    layout.remove_folders(folders.result())  # only folders it made that are still empty
                raise
            report.removed = layout.remove_stale(dest, stale)
            layout.write_rendered(dest, rendered.result())
    except BaseException as exc:
        report.seconds = time.monotonic() - started
        _audit(platform, actor, via, report, outcome="failed", error=getattr(exc, "code", type(exc).__name__))
        raise
    report.seconds = time.monotonic() - started
    _audit(platform, actor, via, report, outcome="ok")
    return report


def _look_in_cache(
    cache: LocalObjectStore, sizes: dict[str, int], files: dict[str, str], verify: bool
) -> tuple[list[str], dict[str, os.stat_result]]:
    """The objects of ``sizes`` the cache lacks (or holds damaged), and the ``stat`` of those it holds (so that
    placing them needs no second look)."""
    shards: dict[str, bool] = {}  # an object whose shard folder is missing is missing: no stat each
    known: dict[str, os.stat_result] = {}
    todo = []
    for digest, size in sizes.items():
        path = files[digest]
        shard = path.rpartition("/")[0]
        if shard not in shards:
            shards[shard] = os.path.isdir(shard)
        st = _cached(cache, digest, size, verify, path) if shards[shard] else None
        if st is None:
            todo.append(digest)
        else:
            known[digest] = st
    return todo, known


def _fetch_missing(
    source: ObjectStore, cache: LocalObjectStore, todo: list[str], sizes: dict[str, int], report: PullReport,
    *, workers: int, emit: Progress,
) -> None:
    """Bring the objects ``todo`` into the cache (in parallel, each verified as it streams)."""
    emit(TransferEvent("fetch", len(todo), sum(sizes[d] for d in todo), start=True))
    tally = _Tally("fetch", emit)

    def fetched(_digest: str, size: int) -> None:
        report.fetched_objects += 1
        report.fetched_bytes += size
        tally.add(size)

    try:
        _parallel(_Fetcher(source, cache), todo, workers, fetched)
    finally:
        tally.flush()


def _sort_out(
    dest: Path, wanted: list[tuple[str, ManifestItem]], files: dict[str, str], known: dict[str, os.stat_result],
    *, look: bool,
) -> tuple[list[tuple[str, ManifestItem]], list[tuple[str, ManifestItem]]]:
    """Split ``wanted`` into the files to place and those already in place (hard links to their object: one or
    two ``stat`` calls each). ``look`` False (an empty folder, or ``verify``): every file is to be placed."""
    if not look:
        return wanted, []
    root = str(dest)
    placing, unchanged = [], []
    for pair in wanted:
        rel, item = pair
        if layout.in_place(files[item.digest], f"{root}/{rel}", known.get(item.digest)):
            unchanged.append(pair)
        else:
            placing.append(pair)
    return placing, unchanged


def _place_all(
    dest: Path, placing: list[tuple[str, ManifestItem]], unchanged: list[tuple[str, ManifestItem]],
    files: dict[str, str], report: PullReport, *, workers: int, verify_source: bool, recheck: bool, emit: Progress,
    fresh: bool = False, folders: Future[list[str]] | None = None,
) -> None:
    """Link (or copy) the objects of ``placing`` (their files in ``files``) into their places under ``dest``;
    ``unchanged`` are already there.

    Args:
        verify_source: re-hash each object before it is first linked (straight from a local store). All are
            hashed, in parallel, before anything is linked, so a damaged object leaves no file in the folder.
        recheck: re-hash files already in place too (``verify``).
        fresh: ``dest`` was empty when the pull began, so no file is looked at before it is linked.
        folders: the folders of ``placing``, being made on a side thread; None: made here.
    """
    emit(TransferEvent("link", len(placing) + len(unchanged), report.bytes_total, start=True))
    root = str(dest)
    tally = _Tally("link", emit)

    def placed(pair: tuple[str, ManifestItem], how: layout.Placed) -> None:
        if how is layout.Placed.LINKED:
            report.linked += 1
        elif how is layout.Placed.COPIED:
            report.copied += 1
        else:
            report.unchanged += 1
        tally.add(pair[1].bytes)

    def place(pair: tuple[str, ManifestItem]) -> layout.Placed:
        rel, item = pair
        return layout.place(files[item.digest], f"{root}/{rel}", item, verify_source=verify_source and recheck,
                            recheck=recheck, absent=fresh)

    def check(digest: str) -> None:
        if layout.hash_file(files[digest]) != digest:
            raise layout.corrupt(digest, f"the object store ({files[digest]})")

    try:
        for pair in unchanged:
            placed(pair, layout.Placed.UNCHANGED)
        if verify_source and not recheck:
            _parallel(check, sorted({item.digest for _, item in placing}), workers, lambda _d, _r: None)
        if folders is None:
            layout.make_folders(dest, (rel for rel, _ in placing))
        else:
            folders.result()
        _parallel(place, placing, workers, placed)
    finally:
        tally.flush()


def _audit(
    platform: Platform, actor: str, via: str, report: PullReport, *, outcome: str, error: str | None = None
) -> None:
    try:
        with platform.session() as session:
            audit.record(session, actor, "dataset.pull", target_kind="dataset_version", target_id=report.version,
                         outcome=outcome, via=via, dataset=report.dataset, items=report.items,
                         fetched_bytes=report.fetched_bytes, dest=report.dest, error=error)
    except (MedcycleError, SQLAlchemyError):
        log.warning("could not write the audit event of a pull of %s", report.version, exc_info=True)


def _version_objects(platform: Platform, ref: str) -> tuple[str, str, dict[str, int]]:
    """Dataset name, version id and every object the version needs (images, manifest, card, label set)."""
    with platform.session() as session:
        row = resolve(session, ref)
        name = session.get_one(DatasetRow, row.dataset_id).name
        needed: dict[str, int] = {}
        stmt = (select(DatasetVersionItemRow.digest, InstanceRow.bytes)
                .join(InstanceRow, InstanceRow.uid == DatasetVersionItemRow.instance_uid)
                .where(DatasetVersionItemRow.version_id == row.id))
        needed.update((d, int(b)) for d, b in session.execute(stmt))
        needed[row.id] = row.manifest_bytes
        for digest in (row.card_digests or {}).values():
            needed[str(digest)] = -1
        if row.label_set_id and session.get(LabelSetRow, row.label_set_id) is not None:
            needed[row.label_set_id] = -1
        return name, row.id, needed


def _exists_many(store: ObjectStore, digests: Iterable[str], workers: int) -> dict[str, bool]:
    out: dict[str, bool] = {}
    _parallel(store.exists, list(digests), workers, lambda d, ok: out.__setitem__(d, ok))
    return out


def push(platform: Platform, ref: str, *, workers: int | None = None, progress: Progress | None = None) -> PushReport:
    """Upload to the object store every object of the version it lacks and the local cache holds.

    Use it for work made offline, or to restore objects the store lost (``medcycle store fsck``) from a
    machine that pulled them.
    """
    started = time.monotonic()
    workers = workers or platform.settings.io_workers
    emit = progress or (lambda _e: None)
    name, version_id, needed = _version_objects(platform, ref)
    report = PushReport(dataset=name, version=version_id, objects=len(needed))
    store = platform.objects
    in_store = _exists_many(store, needed, workers)
    report.present = sum(in_store.values())
    lacking = [d for d, ok in in_store.items() if not ok]
    cache = open_cache(platform) if lacking else None
    uploadable = [d for d in lacking if cache is not None and cache.exists(d)]
    report.missing = sorted(set(lacking) - set(uploadable))
    emit(TransferEvent("upload", len(uploadable), sum(max(needed[d], 0) for d in uploadable), start=True))

    def upload(digest: str) -> int:
        assert cache is not None
        return store.put(cache.path_for(digest), expected_digest=digest).size

    def uploaded(_digest: str, size: int) -> None:
        report.uploaded_objects += 1
        report.uploaded_bytes += size
        emit(TransferEvent("upload", 1, size))

    _parallel(upload, uploadable, workers, uploaded)
    report.seconds = time.monotonic() - started
    return report


def status(
    platform: Platform, ref: str, *, to: Path | None = None, check_store: bool = True, workers: int | None = None
) -> StatusReport:
    """What of the version is on this machine (cache or local store), in the store, and in folder ``to``."""
    workers = workers or platform.settings.io_workers
    name, version_id, needed = _version_objects(platform, ref)
    images = {d: s for d, s in needed.items() if s >= 0 and d != version_id}
    report = StatusReport(dataset=name, version=version_id, objects=len(images), bytes_total=sum(images.values()))
    local, is_store = _local_store(platform)
    for digest, size in images.items():
        if local.exists(digest):
            report.local += 1
        else:
            report.missing_locally += 1
            report.missing_bytes += size
    if check_store:
        in_store = _exists_many(platform.objects, needed, workers)
        report.missing_in_store = sorted(d for d, ok in in_store.items() if not ok)
    with platform.session() as session:
        report.items = int(version_info(session, resolve(session, ref)).n_items)
    if to is not None:
        manifest, _ = _manifest(platform.objects, local, is_store, version_id)
        wanted = {rel: item for rel, item in ((layout.relative_path(i), i) for i in manifest.items)}
        if (Path(to) / layout.MANIFEST_JSON).exists():
            pulled = layout.previous_paths(Path(to))
            wanted = {rel: item for rel, item in wanted.items() if rel in pulled} or wanted
        folder = {"present": 0, "missing": 0, "different": 0}
        for rel, item in wanted.items():
            try:
                size = (Path(to) / rel).stat().st_size
            except FileNotFoundError:
                folder["missing"] += 1
                continue
            folder["present" if size == item.bytes else "different"] += 1
        report.folder = folder
    return report


def ensure_found(report: PushReport) -> None:
    if report.missing:
        raise NotFound(
            f"{len(report.missing)} object(s) of {report.dataset} are in neither the store nor this machine's cache",
            hint="Push from a machine that pulled this version, or restore the objects from a backup.",
            missing=report.missing[:100],
        )
