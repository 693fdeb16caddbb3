"""Local-folder backend: ``ROOT/sha256/ab/cd/<digest>``, written through a temp file, fsync and rename.

A ``put`` streams its source into ``ROOT/tmp/`` while hashing, fsyncs, then links the file into its
sharded place with ``os.link`` (fails if present, so an existing object is never replaced) or
``os.replace`` where hard links are not supported. A ``kill -9`` at any point leaves at most a temp
file, which no reader sees and ``gc`` removes.

With ``defer_sync`` (bulk writers: ingest stores thousands of small files, and two fsyncs a file, waited
for one after the other, cost more than everything else it does per file) a put does not wait for its
fsyncs: it writes to an *unnamed* temp file (``O_TMPFILE``, Linux), gives it its name with one ``linkat``
(no temp name to create and remove in the shared temp folder: about half the cost of a small put; a
killed put leaves nothing behind) and hands the file to background threads that fsync it while the
caller goes on. The caller calls :meth:`LocalObjectStore.sync` before it records anything that points at
the objects: it waits for those fsyncs, then fsyncs the folders that got new names, all in parallel
(the device merges concurrent flushes). Until then a crash of the machine (not of a process: the bytes
are in the page cache) can leave an object torn under its final name, so in this mode a put that finds
its object already there checks it (size, then digest) and replaces it when it is damaged. Where unnamed
files are not available, puts in this mode fsync as usual.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from medcycle.errors import ConfigError
from medcycle.objects.base import (
    ALGORITHM,
    CHUNK,
    DIGEST_RE,
    ObjectInfo,
    ObjectStore,
    Source,
    check_digest,
    missing,
    open_source,
    write_all,
)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_UNNAMED = getattr(os, "O_TMPFILE", 0)
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL}  # what a missing O_TMPFILE looks like
_UNNAMED_OK: dict[str, bool] = {}  # folder, or "dev:N" -> whether unnamed temp files there can be given a name
_SYNCERS: dict[int, ThreadPoolExecutor] = {}  # process id -> the threads that run deferred fsyncs
_SYNCERS_LOCK = threading.Lock()


def _syncer() -> ThreadPoolExecutor:
    """This process's fsync threads (fsync waits on the device, not the CPU: many can wait at once)."""
    with _SYNCERS_LOCK:
        pool = _SYNCERS.get(os.getpid())
        if pool is None:
            pool = _SYNCERS[os.getpid()] = ThreadPoolExecutor(max_workers=16, thread_name_prefix="medcycle-fsync")
        return pool


def unnamed_file(folder: str | Path) -> int | None:
    """An unnamed, read-only (0444) file open for writing in ``folder``, or None where the system or the
    file system cannot make one and then give it a name (see :func:`link_unnamed`)."""
    key = str(folder)
    if not _UNNAMED or _UNNAMED_OK.get(key) is False:
        return None
    try:
        fd = os.open(folder, os.O_WRONLY | _UNNAMED, 0o444)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise  # a real failure (no such folder, no permission, out of descriptors)
        _UNNAMED_OK[key] = False
        return None
    if key not in _UNNAMED_OK:  # a new folder: ask its file system once (linking one needs /proc)
        dev = f"dev:{os.fstat(fd).st_dev}"
        if dev not in _UNNAMED_OK:
            probe = f"{folder}/.probe-{os.getpid()}-{threading.get_ident()}"
            try:
                link_unnamed(fd, probe)
                os.unlink(probe)
                _UNNAMED_OK[dev] = True
            except OSError:
                _UNNAMED_OK[dev] = False
            os.close(fd)  # linked by the probe (or useless): start again from a fresh one
            _UNNAMED_OK[key] = _UNNAMED_OK[dev]
            return unnamed_file(folder)
        _UNNAMED_OK[key] = _UNNAMED_OK[dev]
        if not _UNNAMED_OK[key]:
            os.close(fd)
            return None
    return fd


def link_unnamed(fd: int, path: str) -> None:
    """Give the unnamed file ``fd`` the name ``path`` (atomic; FileExistsError when the name is taken).

    ``linkat(AT_SYMLINK_FOLLOW)`` on /proc/self/fd/N; passing any ``src_dir_fd`` makes ``os.link`` use
    linkat (the kernel ignores it for an absolute path).
    """
    os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=fd, follow_symlinks=True)


class LocalObjectStore(ObjectStore):
    """Objects in a local (or mounted network) folder.

    Args:
        fsync: make each object durable before ``put`` returns (off for a cache that can be refetched).
        defer_sync: puts return before their fsyncs are done; the caller calls :meth:`sync` before relying
            on durability (module docstring).
    """

    def __init__(self, root: Path, *, workers: int = 8, fsync: bool = True, defer_sync: bool = False) -> None:
        super().__init__(workers=workers)
        self.root = root.expanduser().resolve()
        self.url = self.root.as_uri()
        self.fsync = fsync
        self.defer_sync = defer_sync
        self.tmp_dir = self.root / "tmp"
        self.data_dir = self.root / ALGORITHM
        self._data = str(self.data_dir)
        self._folders: set[str] = set()  # shard folders known to exist
        self._lock = threading.Lock()
        self._pending: builtins.list[Future[None]] = []  # deferred fsyncs of objects put (defer_sync)
        self._dirty: set[str] = set()  # folders that got new names since the last sync
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the object store folder {self.root}: {exc.strerror}",
                hint="Point object_store_url at a writable folder.",
            ) from exc

    def path_for(self, digest: str) -> Path:
        return self.data_dir / digest[:2] / digest[2:4] / digest

    def file(self, digest: str) -> str:
        """``path_for`` as a string, without pathlib's cost (~10 µs a path; bulk operations look up thousands)."""
        return f"{self._data}/{digest[:2]}/{digest[2:4]}/{digest}"

    def sync(self) -> None:
        """Make every object put so far through this store durable: wait for the deferred fsyncs of their
        files, then fsync the folders that got new names (see ``defer_sync``). The first failure is raised."""
        with self._lock:
            pending, dirty = self._pending, self._dirty
            self._pending, self._dirty = [], set()
        if not pending and not dirty:
            return
        wait(pending)
        pending += [_syncer().submit(_fsync_dir, Path(folder)) for folder in dirty]
        wait(pending)
        for fut in pending:
            if (exc := fut.exception()) is not None:
                raise exc

    def _intact(self, path: Path, digest: str, size: int) -> bool:
        try:
            if path.stat().st_size != size:
                return False
            with open(path, "rb", buffering=0) as fh:
                return hashlib.file_digest(fh, "sha256").hexdigest() == digest
        except FileNotFoundError:
            return False

    def put(self, source: Source, *, expected_digest: str | None = None) -> ObjectInfo:
        if expected_digest is not None:
            check_digest(expected_digest)
            if isinstance(source, Path) and self.exists(expected_digest):
                return self.stat(expected_digest)
        if self.defer_sync and (fd := unnamed_file(self.tmp_dir)) is not None:
            return self._put_unnamed(fd, source, expected_digest)
        stream, owned = open_source(source)
        fd, tmp_name = tempfile.mkstemp(prefix="put-", dir=self.tmp_dir)
        tmp = Path(tmp_name)
        durable = self.fsync
        try:
            h = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            digest = h.hexdigest()
            self._check_expected(expected_digest, digest)
            final = self.path_for(digest)
            if final.exists():
                if not self.defer_sync or self._intact(final, digest, size):
                    return ObjectInfo(digest, size)
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)  # torn by a crash before its batch was synced: the new bytes are right
                return ObjectInfo(digest, size)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, final)
            except FileExistsError:
                pass  # a concurrent put of the same bytes won; the content is identical
            except OSError:
                os.replace(tmp, final)  # filesystems without hard links
            if durable:
                _fsync_dir(final.parent)
            return ObjectInfo(digest, size)
        finally:
            tmp.unlink(missing_ok=True)
            if owned:
                stream.close()

    def _put_unnamed(self, fd: int, source: Source, expected_digest: str | None) -> ObjectInfo:
        """``put`` through the unnamed file ``fd`` (``defer_sync``: its fsync is deferred; module docstring)."""
        try:
            h = hashlib.sha256()
            size = 0
            if isinstance(source, bytes | bytearray | memoryview):
                h.update(source)
                write_all(fd, memoryview(source))
                size = len(source)
            else:
                stream, owned = open_source(source)
                try:
                    while chunk := stream.read(CHUNK):
                        h.update(chunk)
                        write_all(fd, chunk)
                        size += len(chunk)
                finally:
                    if owned:
                        stream.close()
            digest = h.hexdigest()
            self._check_expected(expected_digest, digest)
            final = self.file(digest)
            if os.path.exists(final):
                if not self._intact(Path(final), digest, size):  # torn by a crash before its batch was synced
                    tmp = f"{self.tmp_dir}/put-{uuid.uuid4().hex}"
                    link_unnamed(fd, tmp)
                    os.fsync(fd)
                    os.replace(tmp, final)
                    _fsync_dir(Path(final).parent)
                return ObjectInfo(digest, size)
            parent = final.rpartition("/")[0]
            if parent not in self._folders:
                os.makedirs(parent, exist_ok=True)
                self._folders.add(parent)
            with contextlib.suppress(FileExistsError):  # a concurrent put of the same bytes won: same content
                link_unnamed(fd, final)
            if self.fsync:
                with self._lock:  # the fsync runs on a background thread, which closes the file; sync() waits
                    self._pending.append(_syncer().submit(_fsync_close, fd))
                    self._dirty.add(parent)
                fd = -1
            return ObjectInfo(digest, size)
        finally:
            if fd >= 0:
                os.close(fd)

    def _open_raw(self, digest: str) -> tuple[BinaryIO, int]:
        try:  # unbuffered: every reader reads in large pieces into buffers of its own
            fh = open(self.file(check_digest(digest)), "rb", buffering=0)  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise missing(digest) from None
        return fh, os.fstat(fh.fileno()).st_size

    def stat(self, digest: str) -> ObjectInfo:
        path = self.path_for(check_digest(digest))
        try:
            st = path.stat()
        except FileNotFoundError:
            raise missing(digest) from None
        return ObjectInfo(digest, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def exists(self, digest: str) -> bool:
        return self.path_for(check_digest(digest)).is_file()

    def delete(self, digest: str) -> bool:
        path = self.path_for(check_digest(digest))
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def list(self) -> Iterator[ObjectInfo]:
        for first in sorted(self.data_dir.iterdir()) if self.data_dir.exists() else []:
            if not first.is_dir():
                continue
            for second in sorted(first.iterdir()):
                if not second.is_dir():
                    continue
                with os.scandir(second) as entries:
                    for entry in entries:
                        if entry.is_file() and DIGEST_RE.match(entry.name):
                            st = entry.stat()
                            yield ObjectInfo(entry.name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def stale_temp_files(self, older_than_seconds: float) -> builtins.list[Path]:
        """Temp files left by interrupted puts (e.g. after ``kill -9``), older than the given age."""
        cutoff = datetime.now(UTC).timestamp() - older_than_seconds
        return [p for p in self.tmp_dir.iterdir() if p.is_file() and p.stat().st_mtime < cutoff]
