"""Pydantic shapes of the runs API, and the server side of part-wise uploads (:func:`assemble`)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

from pydantic import BaseModel, Field

from medcycle.errors import UsageError
from medcycle.objects.base import ObjectInfo, ObjectStore, check_digest

MAX_PARTS = 100_000


class PartIn(BaseModel):
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class AssembleIn(BaseModel):
    """A file uploaded as parts (each an object): its digest, size and the parts in order."""

    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    parts: list[PartIn] = Field(min_length=1, max_length=MAX_PARTS)


class AppliedOut(BaseModel):
    run_id: str
    applied_seq: int


class ObjectOut(BaseModel):
    digest: str
    size: int


class _Concat(io.RawIOBase):
    """The parts' bytes one after the other, read from the store (each part verified as it is read)."""

    def __init__(self, objects: ObjectStore, digests: list[str]) -> None:
        super().__init__()
        self._streams: Iterator[BinaryIO] = (objects.open(d) for d in digests)
        self._current: BinaryIO | None = next(self._streams, None)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._current is not None:
            data = self._current.read(len(buffer))
            if data:
                buffer[: len(data)] = data
                return len(data)
            self._current.close()
            self._current = next(self._streams, None)
        return 0

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
        super().close()


def assemble(objects: ObjectStore, body: AssembleIn) -> ObjectInfo:
    """Store the concatenation of ``body.parts`` as one object, checked against ``body.digest`` (streamed)."""
    digests = [check_digest(p.digest) for p in body.parts]
    total = 0
    for part in body.parts:
        total += objects.stat(part.digest).size
    if total != body.size:
        raise UsageError(f"the parts hold {total} bytes, not the {body.size} announced",
                         hint="Upload the missing parts and assemble again.")
    if objects.exists(body.digest):
        return objects.stat(body.digest)
    with io.BufferedReader(_Concat(objects, digests), buffer_size=1024 * 1024) as stream:
        return objects.put(stream, expected_digest=body.digest)
