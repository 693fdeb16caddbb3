"""Move versions between the object store and a machine: ``pull``, ``push`` and ``status``.

``pull`` materialises exactly one version (or a split/query subset of it) in a folder (see
:mod:`medcycle.datasets.layout`). Objects travel from ``platform.objects`` into the local cache in
parallel, each verified against its digest and written whole, so an interrupted pull resumes where it
stopped (:mod:`medcycle.datasets.fetch`; a store on the cache's file system is linked, not copied). Files
are then hard-linked from the cache into the folder (:mod:`medcycle.datasets.place`). When the object
store is a local folder it is used as the cache (no copy at all); its objects are re-hashed before they
are first linked, so a damaged object is named rather than handed to training. The manifests are made
meanwhile (:mod:`medcycle.datasets.render`); what each operation reports is in
:mod:`medcycle.datasets.report`.

A label-only change between versions moves no image bytes: only the new manifest is fetched.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.catalog.tables import InstanceRow
from medcycle.datasets import layout
from medcycle.datasets.cards import render_markdown, version_card
from medcycle.datasets.fetch import (
    Fetcher,
    PullCache,
    fetch_missing,
    files_of,
    load_manifest,
    local_store,
    look_in_cache,
    open_cache,
    parallel,
)
from medcycle.datasets.place import place_all, sort_out
from medcycle.datasets.render import CATALOG_FIELDS, catalog_fields, select_items
from medcycle.datasets.report import Progress, PullReport, PushReport, StatusReport, TransferEvent
from medcycle.datasets.splits import UNSPLIT
from medcycle.datasets.tables import DatasetRow, DatasetVersionItemRow, LabelSetRow
from medcycle.datasets.versions import VersionInfo, resolve, version_info
from medcycle.errors import MedcycleError, NotFound, UsageError
from medcycle.objects.base import ObjectStore
from medcycle.objects.local import LocalObjectStore
from medcycle.platform import Platform

__all__ = [
    "CATALOG_FIELDS", "Fetcher", "Progress", "PullCache", "PullReport", "PushReport", "StatusReport", "TransferEvent",
    "ensure_found", "layout", "open_cache", "pull", "push", "status",
]

log = logging.getLogger(__name__)


def _refuse_store_folder(platform: Platform, dest: Path) -> None:
    """A pull into the local object store or the cache would mix a training layout with content-addressed
    objects (and a later pull's clean-up would work inside them): refused."""
    target = dest.expanduser().resolve()
    roots = [Path(platform.settings.resolved_cache_dir).expanduser().resolve()]
    if isinstance(platform.objects, LocalObjectStore):
        roots.append(platform.objects.root)
    for root in roots:
        if target == root or root in target.parents:
            raise UsageError(f"{dest} is inside this machine's object store or cache ({root})",
                             hint="Pull into a folder outside the object store and the cache, e.g. --to ./data.")


def _refuse_empty_subset(
    session: Session, info: VersionInfo, ref: str, split: str | None, query: str | None
) -> None:
    """Refuse a ``split`` / ``query`` subset of the version that selects no item, before anything is made.

    Counted in SQL on the version's item rows (a copy of its manifest), so neither the manifest nor the folder
    is needed to tell: a refused pull makes no folder and puts nothing in the cache.
    """
    named = func.coalesce(DatasetVersionItemRow.split, UNSPLIT)
    counts = {str(name): int(n) for name, n in session.execute(
        select(named, func.count()).where(DatasetVersionItemRow.version_id == info.id).group_by(named))}
    splits = ", ".join(f"{name} ({counts[name]})" for name in sorted(counts)) or "none (the version is empty)"
    version = f"{ref} ({info.short}, {info.n_items} items)"
    if split is not None and split not in counts:
        raise UsageError(f"the version {version} has no split {split!r}",
                         hint=f"Pull one of its splits: {splits}.", splits=counts)
    stmt = select(func.count()).where(DatasetVersionItemRow.version_id == info.id)
    if split is not None:
        stmt = stmt.where(named == split)
    if query is not None:
        from medcycle.catalog.query import select_matching

        stmt = stmt.where(DatasetVersionItemRow.instance_uid.in_(
            select_matching(query, InstanceRow.uid, include_quarantined=True)))
    if session.scalar(stmt):
        return
    asked = " and ".join(([f"--split {split}"] if split is not None else [])
                         + ([f"--query {query!r}"] if query is not None else []))
    hint = f"The version's splits are: {splits}."
    if query is not None:
        hint = (f"Check the query with `medcycle data query {shlex.quote(query)} --include-quarantined` "
                f"(it is matched against the version's items only). {hint}")
    raise UsageError(f"{asked} selects no item of {version}: nothing was pulled", hint=hint,
                     split=split, query=query, items_in_version=info.n_items, splits=counts)


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

    Every attempt writes a ``dataset.pull`` audit event, a failed one too (``outcome="failed"`` with the
    error's code; before the version is known, ``ref`` is its target). A pull refused before it starts (an
    unknown version, a ``split`` / ``query`` subset that selects no item, a ``dest`` that is a file or cannot be
    written into) makes no folder and fetches nothing, not even the manifest.

    Raises:
        IntegrityError: an object's bytes do not match its digest (the error names the digest).
        NotFound: the version, or an object it lists, does not exist.
        UsageError: ``dest`` is a file, or a folder that cannot be written into; ``split`` is not one of the
            version's; ``query`` is not valid; the subset selects no item (the message names the version, the
            filter and the version's item count; the hint its splits and how to check the query).
    """
    started = time.monotonic()
    workers = workers or platform.settings.io_workers
    emit = progress or (lambda _e: None)
    dest = Path(dest)
    # Until the version is known the event names what was asked for; a failure from here on is audited.
    report = PullReport(dataset=ref.partition("@")[0], version=ref, ref=ref, dest=str(dest))
    try:
        with platform.session() as session:
            row = resolve(session, ref)
            info = version_info(session, row)
            report.dataset, report.version = info.dataset, info.id
            if split is not None or query is not None:  # before the card is rendered, and before any folder
                _refuse_empty_subset(session, info, ref, split, query)
            card_md = render_markdown(version_card(session, row))
        _refuse_store_folder(platform, dest)
        layout.check_dest(dest)  # only once the version is known: a refused pull makes no folder
        fresh = layout.is_empty(dest)  # nothing to compare with: every file is linked without a look first
        local, is_store = local_store(platform)
        report.source = "local-store" if is_store else "cache"
        manifest, report.manifest_bytes = load_manifest(platform.objects, local, is_store, info.id)
        with platform.session() as session:
            items = select_items(session, info.id, manifest, split, query)
        sizes = {i.digest: i.bytes for i in items}
        report.items, report.objects, report.bytes_total = len(items), len(sizes), sum(sizes.values())
        wanted = [(layout.relative_path(i), i) for i in items]
        stale = layout.previous_paths(dest) - {rel for rel, _ in wanted}
        header = {"dataset": info.dataset, "version": info.id, "seq": info.seq, "tags": list(info.tags),
                  "label_set": manifest.label_set, "split_policy": manifest.split_policy,
                  "subset": {"split": split, "query": query}, "items_in_version": len(manifest.items)}

        def render() -> dict[str, bytes]:
            with platform.session() as session:
                catalog, fields = catalog_fields(session, info.id, {i.uid for i in items})
            return layout.render_outputs(header, wanted, catalog, fields, card_md)

        files = files_of(local, sizes)
        # First what is there already: a stat per object and per file, on this thread. (Done while the side
        # thread below renders, each of those calls would wait for the GIL after it returns: 10x slower.)
        todo, known = ([], {}) if is_store else look_in_cache(local, sizes, files, verify)
        report.cached_objects = len(sizes) - len(todo)
        placing, unchanged = sort_out(dest, wanted, files, known, look=not fresh and not verify)
        # The manifests (catalog fields of every item, JSON, CSV) are made on a side thread while the objects
        # move: for small files that costs as much as moving them. They are written last, once all is in place.
        # The layout's folders (~0.6 per file for 5-image series) are made meanwhile too.
        with ThreadPoolExecutor(max_workers=2) as side:
            rendered = side.submit(render)
            folders = side.submit(layout.make_folders, dest, [rel for rel, _ in placing]) if placing else None
            try:
                if todo:
                    fetch_missing(platform.objects, local, todo, sizes, report, workers=workers, emit=emit)
                place_all(dest, placing, unchanged, files, report, workers=workers, verify_source=is_store,
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
    parallel(store.exists, list(digests), workers, lambda d, ok: out.__setitem__(d, ok))
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

    parallel(upload, uploadable, workers, uploaded)
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
    local, is_store = local_store(platform)
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
        if Path(to).exists() and not Path(to).is_dir():
            raise UsageError(f"{to} exists and is not a folder", hint="Give the folder the version was pulled into.")
        manifest, _ = load_manifest(platform.objects, local, is_store, version_id)
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
            folder["present" if size == item.bytes and _intact(local, Path(to) / rel, item.digest)
                   else "different"] += 1
        report.folder = folder
    return report


def _intact(local: LocalObjectStore, path: Path, digest: str) -> bool:
    """Whether the pulled file at ``path`` holds ``digest``: a hard link to this machine's object is trusted (one
    ``stat``, as pull trusts it); a copy is re-hashed, since a file edited in place keeps its size."""
    try:
        if layout.in_place(local.path_for(digest), path):
            return True
    except OSError:
        pass
    try:
        return layout.hash_file(path) == digest
    except OSError:
        return False


def ensure_found(report: PushReport) -> None:
    if report.missing:
        raise NotFound(
            f"{len(report.missing)} object(s) of {report.dataset} are in neither the store nor this machine's cache",
            hint="Push from a machine that pulled this version, or restore the objects from a backup.",
            missing=report.missing[:100],
        )
