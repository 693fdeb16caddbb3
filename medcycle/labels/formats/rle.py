"""The run-length encodings labeling tools store masks in, in numpy (no pycocotools, no tool SDKs).

* COCO (pycocotools): runs over the mask in column-major (Fortran) order, starting with a run of
  zeros; "compressed" counts are the LEB128-like string of ``maskApi.c`` (``rleToString``): each count
  after the second is stored as the difference to the count two before, in 5-bit groups offset by 48.
* CVAT (XML 1.1 ``<mask rle=...>``): the same alternating runs, but row-major over the mask's bounding box.
* Label Studio brush (``thi.ng/rle-pack``): a bit stream of a flattened RGBA image — 32-bit length,
  5-bit word size, four 4-bit run-length sizes, then repeat runs (``1``) and literal runs (``0``).

Decoders are strict: counts must cover the mask exactly, and malformed streams raise ``ValueError``
(readers turn it into an error naming the file and element).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Bool2D = npt.NDArray[np.bool_]
MAX_PIXELS = 1 << 31  # a decoded mask larger than this is refused rather than allocated


def runs(flat: npt.NDArray[Any]) -> list[int]:
    """Alternating run lengths of a flat boolean array, starting with a (possibly empty) run of zeros."""
    flat = np.asarray(flat, dtype=bool)
    if flat.size == 0:
        return []
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    lengths = np.diff(np.concatenate(([0], edges, [flat.size])))
    out = lengths.tolist()
    return [0, *out] if flat[0] else out


def unruns(counts: list[int], size: int) -> npt.NDArray[np.bool_]:
    """The flat boolean array of ``size`` values that alternating ``counts`` describe."""
    if size > MAX_PIXELS:
        raise ValueError(f"a mask of {size} pixels is over the {MAX_PIXELS} pixel limit")
    if any(c < 0 for c in counts):
        raise ValueError("a run length is negative")
    if sum(counts) != size:
        raise ValueError(f"the runs cover {sum(counts)} pixels, the mask has {size}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts)


# --- COCO -------------------------------------------------------------------------------------------


def coco_encode(mask: npt.NDArray[Any]) -> list[int]:
    """Uncompressed COCO counts of a (rows, cols) mask (column-major runs)."""
    return runs(np.asarray(mask).ravel(order="F"))


def coco_decode(counts: list[int], height: int, width: int) -> Bool2D:
    return unruns(counts, height * width).reshape((height, width), order="F")


def coco_compress(counts: list[int]) -> str:
    """``rleToString`` of pycocotools' maskApi.c."""
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def coco_decompress(text: str) -> list[int]:
    """``rleFrString`` of pycocotools' maskApi.c; refuses characters outside the alphabet."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = k = 0
        more = True
        while more:
            if p >= len(text):
                raise ValueError("the compressed counts end in the middle of a number")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {text[p]!r} at {p} is not a compressed RLE character")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


# --- CVAT -------------------------------------------------------------------------------------------


def cvat_encode(crop: npt.NDArray[Any]) -> list[int]:
    """CVAT counts of a mask cropped to its bounding box (row-major runs)."""
    return runs(np.asarray(crop).ravel(order="C"))


def cvat_decode(counts: list[int], height: int, width: int) -> Bool2D:
    return unruns(counts, height * width).reshape((height, width))


# --- Label Studio brush ----------------------------------------------------------------------------

_LS_SIZES = (3, 4, 8, 16)


def ls_encode(values: npt.NDArray[Any], word: int = 8) -> list[int]:
    """rle-pack bytes (as Label Studio stores them: a list of ints) of a flat uint8 array."""
    flat = np.asarray(values).ravel()
    fields: list[tuple[int, int]] = [(flat.size, 32), (word - 1, 5), *((s - 1, 4) for s in _LS_SIZES)]
    if flat.size:
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        starts = np.concatenate(([0], edges))
        lengths = np.diff(np.concatenate((starts, [flat.size])))
        for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
            value = int(flat[start])
            if length == 1:
                fields += [(0, 1), (0, 2), (0, _LS_SIZES[0]), (value, word)]
                continue
            while length > 0:
                chunk = min(length, 1 << _LS_SIZES[-1])
                code = next(i for i, s in enumerate(_LS_SIZES) if chunk <= 1 << s)
                fields += [(1, 1), (code, 2), (chunk - 1, _LS_SIZES[code]), (value, word)]
                length -= chunk
    bits = "".join(format(v, f"0{n}b") for v, n in fields)
    bits += "0" * (-len(bits) % 8)
    packed = np.packbits(np.frombuffer(bits.encode("ascii"), dtype=np.uint8) - 48)
    return [int(b) for b in packed]


def ls_decode(data: list[int] | bytes, expected: int) -> npt.NDArray[np.uint8]:
    """Decode rle-pack bytes; ``expected`` is the number of values the caller knows it must hold."""
    raw = np.asarray(list(data) if not isinstance(data, bytes) else bytearray(data), dtype=np.int64)
    if raw.size and (raw.min() < 0 or raw.max() > 255):
        raise ValueError("the RLE holds a value that is not a byte (0-255)")
    bits = (np.unpackbits(raw.astype(np.uint8)) + 48).tobytes().decode("ascii")
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > len(bits):
            raise ValueError("the RLE stream ends early")
        value = int(bits[pos:pos + n], 2) if n else 0
        pos += n
        return value

    num = read(32)
    if expected > MAX_PIXELS:
        raise ValueError(f"a mask of {expected} values is over the {MAX_PIXELS} limit")
    if num != expected:
        raise ValueError(f"the RLE holds {num} values, the image needs {expected} (width x height x 4)")
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8 if word <= 8 else np.uint32)
    i = 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if j > num:
            raise ValueError("a run goes past the end of the image")
        if repeat:
            out[i:j] = read(word)
            i = j
        else:
            while i < j:
                out[i] = read(word)
                i += 1
    result: npt.NDArray[np.uint8] = np.minimum(out, 255).astype(np.uint8)
    return result
