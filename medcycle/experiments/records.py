"""The records a run is made of, and their one binary framing (journal files and the ingest endpoint).

Everything a run writes — its start, params, tags, metric points, captures, artifacts, output, its end —
is a :class:`Record` with a per-run sequence number. Records are framed identically in the local journal
and on the wire to a remote server, so a journal can be replayed anywhere and the store applies each
sequence number once::

    frame := u32 length | u32 crc32(body) | body          (little-endian; length counts the body)
    body  := u64 seq | u8 kind | u32 json_length | json | arrays

Metric points travel as packed arrays, not JSON: a ``metrics`` record's JSON names the keys and counts,
and ``arrays`` holds, key after key, ``int64 steps[n] | float64 times[n] | float64 values[n]``. A torn or
corrupt frame at the end of a journal (a ``kill -9`` mid-write) is detected by its length or CRC and
ignored; everything before it is intact. Decoding never evaluates anything and bounds every size.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, BinaryIO

from medcycle.errors import ValidationFailed

FILE_MAGIC = b"MCJ1\n"
MAX_FRAME = 256 * 1024 * 1024  # bytes in one frame
MAX_JSON = 64 * 1024 * 1024
_HEAD = struct.Struct("<II")
_BODY = struct.Struct("<QBI")
_LITTLE = sys.byteorder == "little"


class Kind(IntEnum):
    START = 1
    PARAMS = 2
    TAGS = 3
    METRICS = 4
    CAPTURE = 5
    SEED = 6
    ARTIFACT = 7
    LOG = 8
    END = 9


@dataclass(slots=True)
class Record:
    """One write of a run. ``seq`` is assigned when the record enters the journal (1, 2, …)."""

    kind: Kind
    body: dict[str, Any]
    arrays: bytes = b""
    seq: int = 0
    nbytes: int = 0  # size of the encoded frame, once encoded

    @property
    def weight(self) -> int:
        """Roughly what the record costs in memory and on the wire (for batching)."""
        return self.nbytes or len(self.arrays) + 256

    def encode(self) -> bytes:
        payload = json.dumps(self.body, separators=(",", ":"), allow_nan=False).encode()
        body = _BODY.pack(self.seq, int(self.kind), len(payload)) + payload + self.arrays
        frame = _HEAD.pack(len(body), zlib.crc32(body)) + body
        self.nbytes = len(frame)
        return frame


def _bad(message: str) -> ValidationFailed:
    return ValidationFailed(f"record stream: {message}", hint="The journal or request body is damaged; "
                            "records before the damage are kept.")


def decode_body(body: bytes | memoryview) -> Record:
    if len(body) < _BODY.size:
        raise _bad("a frame is shorter than its header")
    seq, kind, jlen = _BODY.unpack_from(body, 0)
    if jlen > MAX_JSON or _BODY.size + jlen > len(body):
        raise _bad(f"record {seq}: JSON length {jlen} exceeds the frame")
    try:
        parsed = json.loads(bytes(body[_BODY.size:_BODY.size + jlen]))
        kind_enum = Kind(kind)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"record {seq}: {exc}") from None
    if not isinstance(parsed, dict):
        raise _bad(f"record {seq}: the JSON part is not an object")
    return Record(kind_enum, parsed, bytes(body[_BODY.size + jlen:]), seq, len(body) + _HEAD.size)


def decode_frames(data: bytes | memoryview, *, strict: bool = True) -> tuple[list[Record], int]:
    """Records in ``data`` and the bytes consumed. A torn tail raises unless ``strict`` is False."""
    view = memoryview(data)
    out: list[Record] = []
    pos = 0
    while pos < len(view):
        if len(view) - pos < _HEAD.size:
            break
        length, crc = _HEAD.unpack_from(view, pos)
        end = pos + _HEAD.size + length
        if length > MAX_FRAME or end > len(view):
            break
        body = view[pos + _HEAD.size:end]
        if zlib.crc32(body) != crc:
            break
        out.append(decode_body(body))
        pos = end
    if strict and pos != len(view):
        raise _bad(f"torn or corrupt frame at byte {pos}")
    return out, pos


def read_frames(fh: BinaryIO) -> Iterator[tuple[Record, int]]:
    """Records of a journal file after its magic, each with the offset just past it; stops at a torn tail."""
    pos = fh.tell()
    while True:
        head = fh.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return
        length, crc = _HEAD.unpack(head)
        if length > MAX_FRAME:
            return
        body = fh.read(length)
        if len(body) < length or zlib.crc32(body) != crc:
            return
        pos += _HEAD.size + length
        yield decode_body(body), pos


# -- metric arrays ----------------------------------------------------------------------------------
def _pack(code: str, values: Sequence[float] | Sequence[int] | array[Any]) -> bytes:
    arr = values if isinstance(values, array) and values.typecode == code else array(code, values)
    if not _LITTLE:
        arr = array(code, arr)
        arr.byteswap()
    return arr.tobytes()


def _unpack(code: str, data: bytes | memoryview) -> array[Any]:
    arr: array[Any] = array(code)
    arr.frombytes(data)
    if not _LITTLE:
        arr.byteswap()
    return arr


def pack_points(steps: Sequence[int] | array[int], times: Sequence[float] | array[float],
                values: Sequence[float] | array[float]) -> bytes:
    """``int64 steps | float64 times | float64 values`` of one series, little-endian."""
    if not len(steps) == len(times) == len(values):
        raise ValueError("steps, times and values differ in length")
    return _pack("q", steps) + _pack("d", times) + _pack("d", values)


def unpack_points(data: bytes | memoryview, n: int) -> tuple[array[int], array[float], array[float]]:
    if len(data) != 24 * n:
        raise _bad(f"{len(data)} bytes cannot hold {n} metric points")
    view = memoryview(data)
    return _unpack("q", view[:8 * n]), _unpack("d", view[8 * n:16 * n]), _unpack("d", view[16 * n:])


def metrics_record(series: dict[str, tuple[array[int], array[float], array[float]]]) -> Record:
    keys = list(series)
    parts = [pack_points(*series[k]) for k in keys]
    return Record(Kind.METRICS, {"keys": keys, "counts": [len(series[k][0]) for k in keys]}, b"".join(parts))


def split_metrics(record: Record) -> Iterator[tuple[str, array[int], array[float], array[float]]]:
    """The series of a ``metrics`` record: ``(key, steps, times, values)``; validates every size."""
    keys, counts = record.body.get("keys"), record.body.get("counts")
    if not isinstance(keys, list) or not isinstance(counts, list) or len(keys) != len(counts):
        raise _bad(f"record {record.seq}: metrics need equal-length 'keys' and 'counts'")
    if not all(isinstance(k, str) for k in keys) or not all(type(c) is int and c >= 0 for c in counts):
        raise _bad(f"record {record.seq}: metric keys must be strings and counts whole numbers")
    if 24 * sum(counts) != len(record.arrays):
        raise _bad(f"record {record.seq}: {len(record.arrays)} array bytes for {sum(counts)} points")
    view = memoryview(record.arrays)
    pos = 0
    for key, n in zip(keys, counts, strict=True):
        steps, times, values = unpack_points(view[pos:pos + 24 * n], n)
        pos += 24 * n
        yield key, steps, times, values


def finite_or_none(value: float) -> float | None:
    """NaN and infinities as ``None`` (JSON and SQL summaries cannot hold NaN the same way everywhere)."""
    return value if math.isfinite(value) else None
