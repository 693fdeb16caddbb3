"""In-memory backend for unit tests. Not durable; refuses nothing the other backends accept."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from medcycle.objects.base import CHUNK, ObjectInfo, ObjectStore, Source, check_digest, missing, open_source


class MemoryObjectStore(ObjectStore):
    def __init__(self, *, workers: int = 4) -> None:
        super().__init__(workers=workers)
        self.url = "memory://"
        self._data: dict[str, tuple[bytes, datetime]] = {}
        self._lock = threading.Lock()

    def put(self, source: Source, *, expected_digest: str | None = None) -> ObjectInfo:
        stream, owned = open_source(source)
        try:
            h = hashlib.sha256()
            buf = io.BytesIO()
            while chunk := stream.read(CHUNK):
                h.update(chunk)
                buf.write(chunk)
        finally:
            if owned:
                stream.close()
        digest = h.hexdigest()
        self._check_expected(expected_digest, digest)
        data = buf.getvalue()
        with self._lock:
            self._data.setdefault(digest, (data, datetime.now(UTC)))
        return ObjectInfo(digest, len(data))

    def _open_raw(self, digest: str) -> tuple[BinaryIO, int]:
        with self._lock:
            item = self._data.get(check_digest(digest))
        if item is None:
            raise missing(digest)
        return io.BytesIO(item[0]), len(item[0])

    def stat(self, digest: str) -> ObjectInfo:
        with self._lock:
            item = self._data.get(check_digest(digest))
        if item is None:
            raise missing(digest)
        return ObjectInfo(digest, len(item[0]), item[1])

    def delete(self, digest: str) -> bool:
        with self._lock:
            return self._data.pop(check_digest(digest), None) is not None

    def list(self) -> Iterator[ObjectInfo]:
        with self._lock:
            items = [*self._data.items()]
        for digest, (data, modified) in items:
            yield ObjectInfo(digest, len(data), modified)

    def corrupt(self, digest: str, offset: int = 0) -> None:
        """Flip one byte of a stored object (for tests of integrity checks)."""
        with self._lock:
            data, modified = self._data[digest]
            damaged = bytearray(data)
            damaged[offset] ^= 0xFF
            self._data[digest] = (bytes(damaged), modified)
