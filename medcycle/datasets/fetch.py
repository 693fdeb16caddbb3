"""Objects onto this machine: the pull cache, what it lacks, and fetching that, each object verified.

Objects travel from ``platform.objects`` into the local cache (``settings.cache_dir``, itself a
content-addressed store) in parallel, each verified against its digest and made visible whole, so an
interrupted pull resumes where it stopped: objects already cached are not fetched again. When the object
store is a ``LocalObjectStore`` it *is* the cache (nothing is fetched).

**Linking from a store on this file system.** A store that hands out its objects as open local files
(a folder store behind another front, a mounted share) on the file system of the cache need not be
copied: when such a file is read-only (stores write their objects 0444, named by digest, never in place)
and at least :data:`LINK_FROM` bytes, the fetcher hashes it once and, if the bytes match the digest,
hard-links that very inode (by its descriptor, so what was hashed is what gets the name) into the cache.
That costs the hash read and no write, the way ``git clone`` of a local repository hard-links its
immutable objects. Cache, store and pulled folders then share one read-only file per object: anything
that writes *into* a pulled file in place (as root, or after a ``chmod``) changes the store's object
too; tools that write a new file and rename it over the old one, as editors and ``pull`` do, leave it
alone, and ``pull --verify`` or ``medcycle store fsck`` name an object that was changed. Writable
objects, small ones, other file systems, and remote stores (S3) are copied.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

from medcycle.datasets import layout
from medcycle.datasets.manifest import Manifest
from medcycle.datasets.report import Progress, PullReport, Tally, TransferEvent
from medcycle.objects.base import DIGEST_RE, ObjectInfo, ObjectStore, copy_verified
from medcycle.objects.local import LocalObjectStore, link_unnamed, unnamed_file
from medcycle.platform import Platform

T = TypeVar("T")
R = TypeVar("R")

_WRITABLE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
#: Objects smaller than this are copied even when they could be linked: for them a copy costs about what
#: the link does (measured with 64 KiB objects: no faster linked), and the cache keeps a file of its own.
LINK_FROM = 1024 * 1024
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES, errno.ENOENT}


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


def local_store(platform: Platform) -> tuple[LocalObjectStore, bool]:
    """Where this machine's objects are: the store itself when it is a local folder (True), else the cache."""
    store = platform.objects
    if isinstance(store, LocalObjectStore):
        return store, True
    return open_cache(platform), False


def parallel(fn: Callable[[T], R], items: Sequence[T], workers: int, done: Callable[[T, R], None]) -> None:
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


def _open_file(raw: BinaryIO) -> os.stat_result | None:
    """The ``stat`` of ``raw`` when it is an open regular file, else None (a network stream)."""
    fileno = getattr(raw, "fileno", None)
    if fileno is None:
        return None
    try:
        st = os.fstat(int(fileno()))
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


class Fetcher:
    """Brings objects from the store into the cache, each verified and made visible whole (never corrupt).

    A copy goes to an *unnamed* file in its shard folder (``O_TMPFILE``), hashed as it is written, and is
    given its name with one ``linkat`` once its digest checked out: one directory operation per object
    instead of a temp name plus a rename, and a fetch that fails or is killed leaves nothing behind (the
    kernel frees the unnamed file). Where unnamed files are not supported (other systems, some file
    systems) a temp file named after the digest, process and thread is written next to the object's place
    and renamed: parallel fetches do not queue on one temp folder's lock, and a ``.part`` left by an
    interrupted pull is replaced by the next fetch of the object by the same process and thread id.

    A large read-only object the store hands out as a local file on the cache's file system is hashed and
    hard-linked instead (module docstring); ``link`` False always copies.

    The cache is not fsynced: its objects can always be fetched again, and a torn one (after a crash of the
    machine) is caught by its size on the next pull, or by its digest with ``verify``.
    """

    def __init__(self, source: ObjectStore, cache: LocalObjectStore, *, link: bool = True) -> None:
        self.source, self.cache = source, cache
        self.folders: set[str] = set()  # shard folders known to exist
        self.unnamed = True
        self.link = link
        self.device = os.stat(cache.data_dir).st_dev

    def __call__(self, digest: str) -> int:
        """Fetch ``digest`` into the cache; returns its size."""
        return self.fetch(digest)[0]

    def fetch(self, digest: str) -> tuple[int, bool]:
        """Fetch ``digest`` into the cache; returns its size and whether it was linked rather than copied."""
        final = self.cache.file(digest)
        parent = final.rpartition("/")[0]
        if parent not in self.folders:
            os.makedirs(parent, exist_ok=True)
            self.folders.add(parent)
        # The store's raw handle: the one way a store (or a wrapper of one) says its object is a local file.
        raw, size = self.source._open_raw(digest)
        with raw:
            st = _open_file(raw) if self.link and size >= LINK_FROM else None
            if (st is not None and st.st_dev == self.device and not st.st_mode & _WRITABLE and st.st_size == size
                    and self._link(raw.fileno(), digest, final)):
                return size, True
            return self._copy(raw, size, digest, final, parent), False

    def _link(self, fd: int, digest: str, final: str) -> bool:
        """Hash the open file ``fd`` and, when it is ``digest``, give that inode the name ``final``; False
        when the file system will not link it (the caller copies)."""
        actual = layout.hash_fd(fd)
        if actual != digest:
            raise layout.corrupt(digest, f"the object store (read as {actual})")
        try:
            link_unnamed(fd, final)  # linkat of /proc/self/fd/N: the inode just hashed, whatever its name now
        except FileExistsError:  # another pull fetched it meanwhile: the same verified bytes
            return True
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            return False
        return True

    def _copy(self, raw: BinaryIO, size: int, digest: str, final: str, parent: str) -> int:
        if self.unnamed:
            fd = unnamed_file(parent)
            if fd is None:
                self.unnamed = False
            else:
                try:
                    written = copy_verified(raw, fd, digest, size)
                    link_unnamed(fd, final)
                    return written
                except FileExistsError:  # another pull fetched it meanwhile: the same verified bytes
                    return size
                finally:
                    os.close(fd)
        return self._named(raw, size, digest, final, parent)

    def _named(self, raw: BinaryIO, size: int, digest: str, final: str, parent: str) -> int:
        tmp = f"{parent}/.{digest}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileExistsError:  # left by an interrupted pull
            os.unlink(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            try:
                written = copy_verified(raw, fd, digest, size)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return written


def files_of(local: LocalObjectStore, digests: Iterable[str]) -> dict[str, str]:
    """The file of each object on this machine, as strings (pathlib costs ~10 µs a path)."""
    return {d: local.file(d) for d in digests}


def cached(cache: LocalObjectStore, digest: str, size: int, verify: bool, path: str) -> os.stat_result | None:
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


def load_manifest(
    source: ObjectStore, cache: LocalObjectStore, is_store: bool, version_id: str
) -> tuple[Manifest, int]:
    """The version's manifest (fetched into the cache first when it is not there) and its size in bytes."""
    if not is_store and not cache.exists(version_id):
        Fetcher(source, cache)(version_id)
    data = cache.get(version_id)  # verified read
    return Manifest.from_bytes(data, expected_digest=version_id), len(data)


def look_in_cache(
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
        st = cached(cache, digest, size, verify, path) if shards[shard] else None
        if st is None:
            todo.append(digest)
        else:
            known[digest] = st
    return todo, known


def fetch_missing(
    source: ObjectStore, cache: LocalObjectStore, todo: list[str], sizes: dict[str, int], report: PullReport,
    *, workers: int, emit: Progress,
) -> None:
    """Bring the objects ``todo`` into the cache (in parallel, each verified)."""
    emit(TransferEvent("fetch", len(todo), sum(sizes[d] for d in todo), start=True))
    tally = Tally("fetch", emit)

    def fetched(_digest: str, result: tuple[int, bool]) -> None:
        size, linked = result
        report.fetched_objects += 1
        report.fetched_bytes += size
        report.fetched_linked += linked
        tally.add(size)

    try:
        parallel(Fetcher(source, cache).fetch, todo, workers, fetched)
    finally:
        tally.flush()
