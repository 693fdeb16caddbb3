"""Local-folder backend: ``ROOT/sha256/ab/cd/<digest>``, written through a temp file, fsync and rename.

A ``put`` streams its source into ``ROOT/tmp/`` while hashing, fsyncs, then links the file into its
sharded place with ``os.link`` (fails if present, so an existing object is never replaced) or
``os.replace`` where hard links are not supported. A ``kill -9`` at any point leaves at most a temp
file, which no reader sees and ``gc`` removes.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import tempfile
from collections.abc import Iterator
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
)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalObjectStore(ObjectStore):
    """Objects in a local (or mounted network) folder."""

    def __init__(self, root: Path, *, workers: int = 8, fsync: bool = True) -> None:
        super().__init__(workers=workers)
        self.root = root.expanduser().resolve()
        self.url = self.root.as_uri()
        self.fsync = fsync
        self.tmp_dir = self.root / "tmp"
        self.data_dir = self.root / ALGORITHM
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

    def put(self, source: Source, *, expected_digest: str | None = None) -> ObjectInfo:
        if expected_digest is not None:
            check_digest(expected_digest)
            if isinstance(source, Path) and self.exists(expected_digest):
                return self.stat(expected_digest)
        stream, owned = open_source(source)
        fd, tmp_name = tempfile.mkstemp(prefix="put-", dir=self.tmp_dir)
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                if self.fsync:
                    os.fsync(out.fileno())
            digest = h.hexdigest()
            self._check_expected(expected_digest, digest)
            final = self.path_for(digest)
            if final.exists():
                return ObjectInfo(digest, size)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, final)
            except FileExistsError:
                pass  # a concurrent put of the same bytes won; the content is identical
            except OSError:
                os.replace(tmp, final)  # filesystems without hard links
            if self.fsync:
                _fsync_dir(final.parent)
            return ObjectInfo(digest, size)
        finally:
            tmp.unlink(missing_ok=True)
            if owned:
                stream.close()

    def _open_raw(self, digest: str) -> tuple[BinaryIO, int]:
        path = self.path_for(check_digest(digest))
        try:
            fh = path.open("rb")
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
