"""The object store contract: content-addressed, streaming, atomic, verified on every read.

An object is addressed by the SHA-256 of its bytes (64 lowercase hex characters). ``put`` streams
its input (never the whole object in memory), hashes it while writing, and makes the object visible
atomically under its digest: a reader never sees a partial object, also after ``kill -9``. Every read
verifies the digest and raises :class:`~medcycle.errors.IntegrityError` naming the object on mismatch.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import mmap
import os
import re
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

from medcycle.errors import IntegrityError, NotFound, UsageError

CHUNK = 1024 * 1024  # 1 MiB read/write unit for streaming
MAP_FROM = 4 * CHUNK  # objects this large that live in a local file are hashed and copied from a memory map
DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
ALGORITHM = "sha256"

Source = bytes | bytearray | memoryview | Path | BinaryIO
T = TypeVar("T")
R = TypeVar("R")


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is a well-formed SHA-256 hex digest, else raise a usage error."""
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise UsageError(
            f"{digest!r} is not an object digest",
            hint="An object digest is the 64-character lowercase hex SHA-256 of its bytes.",
        )
    return digest


_BUFFERS = threading.local()  # one reusable read buffer per thread (no allocation per chunk or per object)


def read_buffer() -> memoryview:
    """This thread's reusable read buffer of :data:`CHUNK` bytes."""
    buf: memoryview | None = getattr(_BUFFERS, "buf", None)
    if buf is None:
        buf = _BUFFERS.buf = memoryview(bytearray(CHUNK))
    return buf


def write_all(fd: int, data: memoryview | bytes) -> None:
    """``os.write`` until every byte of ``data`` is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _regular_file(raw: object) -> int | None:
    """The descriptor of ``raw`` when it is an open regular file (so it can be memory-mapped), else None."""
    fileno = getattr(raw, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = int(fileno())
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError, io.UnsupportedOperation):
        return None


def copy_verified(raw: BinaryIO, fd: int, digest: str, size: int | None = None) -> int:
    """Write all of ``raw`` to file descriptor ``fd`` while hashing it; return the byte count.

    One pass over the bytes: each piece is hashed and written from the same buffer (``hashlib`` and
    ``os.write`` release the GIL, so threads copying different objects run on all cores). A large object
    in a local file is hashed and written straight from a read-only memory map, which spares copying it
    into a buffer first. The digest is checked at the end: on a mismatch :class:`IntegrityError` names the
    object, and what was written to ``fd`` must be discarded by the caller.
    """
    h = hashlib.sha256()
    written = 0
    mapped = _regular_file(raw) if size is not None and size >= MAP_FROM else None
    if mapped is not None:
        with mmap.mmap(mapped, 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                for start in range(0, len(view), CHUNK):
                    piece = view[start : start + CHUNK]
                    try:
                        h.update(piece)
                        write_all(fd, piece)
                    finally:
                        piece.release()
                written = len(view)
            finally:
                view.release()
    else:
        buf = read_buffer()
        readinto = getattr(raw, "readinto", None)
        while True:
            if readinto is not None:
                n = readinto(buf) or 0
                piece = buf[:n]
            else:
                data = raw.read(CHUNK)
                n, piece = len(data), memoryview(data)
            if not n:
                break
            h.update(piece)
            write_all(fd, piece)
            written += n
    actual = h.hexdigest()
    if actual != digest:
        raise corrupt(digest, actual)
    return written


def corrupt(digest: str, actual: str) -> IntegrityError:
    """The error for an object whose bytes hash to ``actual``: it names the object."""
    return IntegrityError(
        f"object {digest} is corrupt: its bytes hash to {actual}",
        hint="Restore the object from a replica or backup, then run `medcycle store fsck`.",
        digest=digest,
    )


def digest_bytes(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_file(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    digest: str
    size: int
    modified: datetime | None = None


def open_source(source: Source) -> tuple[BinaryIO, bool]:
    """A binary stream over ``source`` and whether the caller must close it."""
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, Path):
        if not source.is_file():
            raise NotFound(f"file {source} does not exist", hint="Check the path.")
        return source.open("rb"), True
    if hasattr(source, "read"):
        return source, False
    raise UsageError(f"cannot store a {type(source).__name__}", hint="Pass bytes, a Path or a binary file object.")


class VerifyingReader(io.RawIOBase):
    """Reads an object's stream and checks its digest when the end is reached.

    A reader that stops early cannot be verified; :meth:`read_all_verified` and the store's ``get``/
    ``get_to_path`` read to the end. The integrity error names the object.
    """

    def __init__(
        self, raw: BinaryIO, digest: str, size: int | None = None, *, on_close: Callable[[], None] | None = None
    ):
        super().__init__()
        self._raw = raw
        self._digest = digest
        self._hash = hashlib.sha256()
        self._read = 0
        self._size = size
        self._verified = False
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        if n == 0:
            self._verify()
            return 0
        buffer[:n] = data
        self._hash.update(data)
        self._read += n
        return n

    def readall(self) -> bytes:
        """The rest of the stream in as few reads as the stream allows, verified (``read()`` without a size
        would otherwise go through :meth:`readinto` 8 KiB at a time: 64 calls and hash updates a 512 KiB image)."""
        parts = []
        while data := self._raw.read():
            self._hash.update(data)
            self._read += len(data)
            parts.append(data)
        self._verify()
        return b"".join(parts)

    def _verify(self) -> None:
        if self._verified:
            return
        self._verified = True
        actual = self._hash.hexdigest()
        if actual != self._digest:
            raise corrupt(self._digest, actual)

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                if self._on_close:
                    self._on_close()
        super().close()


class ObjectStore(ABC):
    """Every backend's contract. Backends implement ``put``, ``_open_raw``, ``stat``, ``delete`` and ``list``;
    verified reads and parallel batch operations are shared here."""

    url: str = ""
    #: Whether a put or get is a network round trip (S3) rather than this machine's disk or memory: callers that
    #: size thread pools by the CPU use more threads for a remote store, whose calls mostly wait.
    remote: bool = False

    def __init__(self, *, workers: int = 8) -> None:
        self.workers = workers

    @abstractmethod
    def put(self, source: Source, *, expected_digest: str | None = None) -> ObjectInfo:
        """Store ``source`` (streamed, atomic); return its digest and size. Storing existing bytes is a no-op."""

    @abstractmethod
    def _open_raw(self, digest: str) -> tuple[BinaryIO, int]:
        """The stored bytes as an unverified stream, and their size; NotFound when missing."""

    @abstractmethod
    def stat(self, digest: str) -> ObjectInfo:
        """Digest, size and modification time; NotFound when missing."""

    @abstractmethod
    def delete(self, digest: str) -> bool:
        """Remove the object; return whether it existed."""

    @abstractmethod
    def list(self) -> Iterator[ObjectInfo]:
        """Every stored object, in no particular order."""

    # Shared.
    def exists(self, digest: str) -> bool:
        try:
            self.stat(digest)
        except NotFound:
            return False
        return True

    def open(self, digest: str) -> BinaryIO:
        check_digest(digest)
        raw, size = self._open_raw(digest)
        return io.BufferedReader(VerifyingReader(raw, digest, size), buffer_size=CHUNK)

    def get(self, digest: str) -> bytes:
        with self.open(digest) as fh:
            return fh.read()

    def copy_into(self, digest: str, fd: int) -> int:
        """Write object ``digest`` to the open file descriptor ``fd``, verified in the same pass; return its size.

        The fast way to fetch many objects into local files (a pull's cache): no stream wrappers, one buffer
        per thread, hashing and writing the same bytes. Raises :class:`IntegrityError` (naming the object)
        *after* writing when the bytes do not match: the caller discards the file, never publishes it.
        """
        check_digest(digest)
        raw, size = self._open_raw(digest)
        with raw:
            return copy_verified(raw, fd, digest, size)

    def sync(self) -> None:
        """Make every object put so far through this store object durable.

        A no-op here: a backend's ``put`` is durable when it returns unless the backend says otherwise
        (see :class:`~medcycle.objects.local.LocalObjectStore`'s ``defer_sync``).
        """
        return None

    def get_to_path(self, digest: str, dest: Path) -> ObjectInfo:
        import os
        import tempfile

        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, self.open(digest) as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    size += len(chunk)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return ObjectInfo(digest, size)

    def verify(self, digest: str) -> bool:
        try:
            with self.open(digest) as fh:
                while fh.read(CHUNK):
                    pass
        except IntegrityError:
            return False
        return True

    def _parallel(self, fn: Callable[[T], R], items: Iterable[T]) -> builtins.list[R]:
        items = builtins.list(items)
        if len(items) <= 1 or self.workers <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            return builtins.list(pool.map(fn, items))

    def put_many(self, sources: Iterable[Source]) -> builtins.list[ObjectInfo]:
        return self._parallel(lambda s: self.put(s), sources)

    def get_many_to_paths(self, pairs: Iterable[tuple[str, Path]]) -> builtins.list[ObjectInfo]:
        return self._parallel(lambda p: self.get_to_path(p[0], p[1]), pairs)

    def delete_many(self, digests: Iterable[str]) -> builtins.list[bool]:
        return self._parallel(self.delete, digests)

    def close(self) -> None:
        return None

    def _check_expected(self, expected: str | None, actual: str) -> None:
        if expected is not None and expected != actual:
            raise IntegrityError(
                f"the bytes given hash to {actual}, not the expected {expected}",
                hint="The source changed or was damaged in transit; send it again.",
                expected=expected,
                actual=actual,
            )


def missing(digest: str) -> NotFound:
    return NotFound(
        f"object {digest} is not in the object store",
        hint="It may have been garbage-collected or never uploaded; run `medcycle store fsck` to check the store.",
        digest=digest,
    )
