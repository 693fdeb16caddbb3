"""Local-folder backend: ``ROOT/sha256/ab/cd/<digest>``, written through a temp file, fsync and rename.

A ``put`` streams its source into ``ROOT/tmp/`` while hashing, fsyncs, then links the file into its
sharded place with ``os.link`` (fails if present, so an existing object is never replaced) or
``os.replace`` where hard links are not supported. A ``kill -9`` at any point leaves at most a temp
file, which no reader sees and ``gc`` removes.

With ``defer_sync`` (bulk writers: ingest stores thousands of small files, and two fsyncs a file, waited
for one after the other, cost more than everything else it does per file) a put does not wait for its
fsyncs. A put of bytes in memory hashes them first, so bytes already stored cost one ``stat`` (and a
check, below) and no write; new bytes go to an *unnamed* temp file (``O_TMPFILE``, Linux) in one
``write`` and get their name with one ``linkat`` (no temp name to create and remove in the shared temp
folder; a killed put leaves nothing behind). Shard folders are made the first time a name in them fails
to link. The file stays open, unsynced, in the store's pending list. The caller calls
:meth:`LocalObjectStore.sync` before it records anything that points at the objects; it makes the whole
batch durable in one burst: with several files pending on Linux (5.8 or later, where ``syncfs`` reports
write-back errors) one ``syncfs`` of their file system, which writes back and commits every file and
folder entry of the batch at once (one journal commit instead of one per file); otherwise an fsync of
each file, all at once on a few threads (the device merges concurrent flushes), then one fsync of each
folder that got new names or new sub-folders. A pending list that grows past a bound is synced the
same way before the next put returns (open descriptors are finite). Until ``sync`` returns a crash of
the machine (not of a process: the bytes are in the page cache) can leave an object torn under its
final name, so in this mode a put that finds its object already there checks it (size, then digest)
and replaces it when it is damaged. Where unnamed files are not available, puts in this mode fsync as
usual.

A bulk writer that stores from several processes (ingest's workers) can make every process's objects durable
with one ``syncfs`` instead of one a process and batch: its stores put with ``fsync`` off and ``defer_sync`` on
(nothing pending, nothing waited for), and it calls a :class:`FileSystemSync` of the store, opened before the
first put, before it records anything that points at the objects. ``syncfs`` writes back the whole file
system, whichever process wrote to it, and reports a write-back error that happened on it since the
descriptor was opened.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import errno
import hashlib
import io
import os
import platform
import stat
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

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


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_UNNAMED = getattr(os, "O_TMPFILE", 0)
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL}  # what a missing O_TMPFILE looks like
_UNNAMED_OK: dict[str, bool] = {}  # folder, or "dev:N" -> whether unnamed temp files there can be given a name
_SYNCERS: dict[int, ThreadPoolExecutor] = {}  # process id -> the threads that run a batch's fsyncs
_SYNCERS_LOCK = threading.Lock()
MAX_PENDING = 512  # deferred files held open before a put syncs them (each holds a descriptor)
SYNCFS_FROM = 4  # pending files from which one syncfs of their file system beats an fsync each


def _syncer() -> ThreadPoolExecutor:
    """This process's fsync threads (fsync waits on the device, not the CPU: many can wait at once)."""
    with _SYNCERS_LOCK:
        pool = _SYNCERS.get(os.getpid())
        if pool is None:
            pool = _SYNCERS[os.getpid()] = ThreadPoolExecutor(max_workers=16, thread_name_prefix="medcycle-fsync")
        return pool


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(2)`` where it reports write-back errors (Linux 5.8 and later), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return None
    if (major, minor) < (5, 8):  # older kernels return 0 from syncfs even when write-back failed
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return cast("Callable[[int], int]", fn)


_SYNCFS = _load_syncfs()


def syncfs(fd: int) -> bool:
    """Write back and commit everything of the file system that holds ``fd`` (``syncfs(2)``); False where
    it is not available (the caller fsyncs each file instead). An I/O error is raised."""
    if _SYNCFS is None:
        return False
    if _SYNCFS(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"syncfs: {os.strerror(code)}")
    return True


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


class FileSystemSync:
    """Makes everything written to the file system of ``folder`` so far durable, by any process (see the module
    docstring): one ``syncfs`` through a descriptor opened now, so that any write-back error from now on is
    raised. Only where ``syncfs`` reports such errors: :meth:`LocalObjectStore.file_system_sync` says where."""

    def __init__(self, folder: Path) -> None:
        self._fd: int | None = os.open(folder, os.O_RDONLY)

    def __call__(self) -> None:
        if self._fd is None:
            raise ValueError("this FileSystemSync is closed")
        if not syncfs(self._fd):
            raise OSError(errno.ENOSYS, "syncfs is not available")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileSystemSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        self._pending: builtins.list[int] = []  # open descriptors of deferred files not yet synced (defer_sync)
        self._dirty: set[str] = set()  # folders that got new names or sub-folders since the last sync
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
        """Make every object put so far through this store durable (see ``defer_sync``): one ``syncfs`` of
        the store's file system where several files are pending and it is available, else an fsync of each
        pending file and then of each folder that got new entries. The first failure is raised."""
        with self._lock:
            fds, dirty = self._pending, self._dirty
            self._pending, self._dirty = [], set()
        if not fds and not dirty:
            return
        try:
            if len(fds) >= SYNCFS_FROM and syncfs(fds[0]):
                return  # every file, name and folder of the batch is on that one file system
            if len(fds) > 1:
                for _ in _syncer().map(os.fsync, fds):  # all at once: concurrent flushes are merged
                    pass
            elif fds:
                os.fsync(fds[0])
            for folder in sorted(dirty, key=len, reverse=True):  # sub-folders before the folders naming them
                _fsync_dir(folder)
        finally:
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        """Sync what is pending (and release its descriptors)."""
        self.sync()

    def file_system_sync(self) -> FileSystemSync | None:
        """A :class:`FileSystemSync` of this store's file system, or None where ``syncfs`` is not available or
        does not report write-back errors (not Linux, or Linux before 5.8); the caller closes it."""
        return FileSystemSync(self.root) if _SYNCFS is not None else None

    def _intact(self, path: str | Path, digest: str, size: int, found: int | None = None) -> bool:
        """Whether the file at ``path`` holds ``size`` bytes hashing to ``digest`` (``found``: its size, if
        already known from a stat)."""
        try:
            if (found if found is not None else os.stat(path).st_size) != size:
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
        if isinstance(source, bytes | bytearray | memoryview):
            view = memoryview(source)
            return self._put_bytes(view.cast("B") if view.c_contiguous else memoryview(view.tobytes()), expected_digest)
        if self.defer_sync and (fd := unnamed_file(self.tmp_dir)) is not None:
            return self._put_unnamed(fd, source, expected_digest)
        stream, owned = open_source(source)
        try:
            return self._put_named(stream, expected_digest)
        finally:
            if owned:
                stream.close()

    def _put_bytes(self, data: memoryview, expected_digest: str | None) -> ObjectInfo:
        """``put`` of bytes already in memory: hashed first, so existing bytes are never written again."""
        digest = hashlib.sha256(data).hexdigest()
        self._check_expected(expected_digest, digest)
        size = len(data)
        final = self.file(digest)
        try:
            found = os.stat(final)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISREG(found.st_mode) and (
                not self.defer_sync or self._intact(final, digest, size, found.st_size)
            ):
                return ObjectInfo(digest, size)
            # torn by a crash before its batch was synced: written again below, replacing it
        if self.defer_sync and (fd := unnamed_file(self.tmp_dir)) is not None:
            try:
                write_all(fd, data)
            except BaseException:
                os.close(fd)
                raise
            return self._place_unnamed(fd, digest, size)
        return self._put_named(io.BytesIO(data), expected_digest)

    def _put_named(self, stream: BinaryIO, expected_digest: str | None) -> ObjectInfo:
        """``put`` through a named temp file in ``ROOT/tmp/``, fsynced (with ``fsync``) before it is linked."""
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
                if durable:
                    _fsync_dir(final.parent)
                return ObjectInfo(digest, size)
            self._folders.discard(str(final.parent))  # not the hot path: ask the file system
            made = self._make_folders(str(final.parent))
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, final)
            except FileExistsError:
                pass  # a concurrent put of the same bytes won; the content is identical
            except OSError:
                os.replace(tmp, final)  # filesystems without hard links
            if durable:
                _fsync_dir(final.parent)
                for folder in made:  # the new folders' own names, deepest first
                    _fsync_dir(folder.rpartition("/")[0])
            return ObjectInfo(digest, size)
        finally:
            tmp.unlink(missing_ok=True)

    def _make_folders(self, parent: str) -> builtins.list[str]:
        """Make the shard folder ``parent`` (and its parent) where missing; return those made, deepest first."""
        if parent in self._folders:
            return []
        made: builtins.list[str] = []
        folder = parent
        while True:
            try:
                os.mkdir(folder)
                made.append(folder)
            except FileExistsError:
                pass  # there already, or just made by a concurrent put
            except FileNotFoundError:
                if folder == self._data:
                    raise
                folder = folder.rpartition("/")[0]  # the level above is missing too: make it first
                continue
            if folder == parent:
                break
            folder = parent  # the level above exists now: back down
        self._folders.add(parent)
        return sorted(made, key=len, reverse=True)

    def _put_unnamed(self, fd: int, source: Source, expected_digest: str | None) -> ObjectInfo:
        """``put`` of a stream through the unnamed file ``fd`` (``defer_sync``: its fsync is deferred)."""
        try:
            h = hashlib.sha256()
            size = 0
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
            try:
                found = os.stat(final)
            except FileNotFoundError:
                pass
            else:
                if stat.S_ISREG(found.st_mode) and self._intact(final, digest, size, found.st_size):
                    os.close(fd)
                    return ObjectInfo(digest, size)
        except BaseException:
            os.close(fd)
            raise
        return self._place_unnamed(fd, digest, size)

    def _place_unnamed(self, fd: int, digest: str, size: int) -> ObjectInfo:
        """Give the complete unnamed file ``fd`` its object's name and add it to the pending batch (which
        then owns ``fd``). A damaged file already under that name (a machine crash before its batch was
        synced) is replaced, durably, at once."""
        final = self.file(digest)
        parent = final.rpartition("/")[0]
        made: builtins.list[str] = []
        try:
            try:
                link_unnamed(fd, final)
            except FileNotFoundError:  # a new shard folder (or one removed since it was made)
                self._folders.discard(parent)
                made = self._make_folders(parent)
                with contextlib.suppress(FileExistsError):
                    link_unnamed(fd, final)
            except FileExistsError:
                if self._intact(final, digest, size):  # a concurrent put of the same bytes won
                    os.close(fd)
                    return ObjectInfo(digest, size)
                tmp = f"{self.tmp_dir}/put-{uuid.uuid4().hex}"
                link_unnamed(fd, tmp)
                try:
                    os.fsync(fd)
                    os.replace(tmp, final)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                _fsync_dir(parent)
                os.close(fd)
                return ObjectInfo(digest, size)
        except BaseException:
            os.close(fd)
            raise
        if not self.fsync:
            os.close(fd)
            return ObjectInfo(digest, size)
        with self._lock:
            self._pending.append(fd)
            self._dirty.add(parent)
            self._dirty.update(folder.rpartition("/")[0] for folder in made)
            full = len(self._pending) >= MAX_PENDING
        if full:
            self.sync()
        return ObjectInfo(digest, size)

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
