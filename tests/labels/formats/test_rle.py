"""The mask run-length codecs against known pycocotools strings and as round-trip properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medcycle.labels.formats import rle

masks = arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 1))


def _square(lo: int, hi: int) -> np.ndarray:
    m = np.zeros((25, 25), dtype=np.uint8)
    m[lo:hi, lo:hi] = 1
    return m


@pytest.mark.parametrize(("lo", "hi", "counts"), [
    (0, 5, "05d00000000d?"),       # pycocotools.mask.encode of a 5x5 square in a 25x25 mask
    (5, 10, "R45d00000000b;"),
    (20, 25, "X`05d00000000"),
])
def test_coco_compressed_counts_match_pycocotools(lo: int, hi: int, counts: str) -> None:
    mask = _square(lo, hi)
    assert rle.coco_compress(rle.coco_encode(mask)) == counts
    assert np.array_equal(rle.coco_decode(rle.coco_decompress(counts), 25, 25), mask.astype(bool))


def test_coco_counts_are_column_major_and_start_with_zeros() -> None:
    mask = np.array([[1, 0, 0], [1, 1, 0]], dtype=np.uint8)
    assert rle.coco_encode(mask) == [0, 2, 1, 1, 2]  # column-major: 1 1 | 0 1 | 0 0
    assert rle.coco_encode(np.zeros((2, 2))) == [4]
    assert rle.coco_decompress("000lg0")[:3] == [0, 0, 0]  # leading zero-length runs (pycocotools test case)


@settings(max_examples=60, deadline=None)
@given(masks)
def test_coco_round_trip(mask: np.ndarray) -> None:
    counts = rle.coco_encode(mask)
    assert rle.coco_decompress(rle.coco_compress(counts)) == counts
    assert np.array_equal(rle.coco_decode(counts, *mask.shape), mask.astype(bool))


@settings(max_examples=60, deadline=None)
@given(masks)
def test_cvat_round_trip_is_row_major(mask: np.ndarray) -> None:
    counts = rle.cvat_encode(mask)
    assert counts == rle.runs(mask.ravel(order="C"))
    assert np.array_equal(rle.cvat_decode(counts, *mask.shape), mask.astype(bool))


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.integers(1, 400), elements=st.sampled_from([0, 0, 0, 255, 7])))
def test_label_studio_round_trip(values: np.ndarray) -> None:
    assert np.array_equal(rle.ls_decode(rle.ls_encode(values), values.size), values)


def test_label_studio_long_runs_split_at_65536() -> None:
    values = np.zeros(200_000, dtype=np.uint8)
    values[70_000:140_001] = 255
    assert np.array_equal(rle.ls_decode(rle.ls_encode(values), values.size), values)


def test_label_studio_header_matches_rle_pack() -> None:
    data = rle.ls_encode(np.full(4, 255, dtype=np.uint8))
    bits = "".join(f"{b:08b}" for b in data)
    assert int(bits[:32], 2) == 4 and int(bits[32:37], 2) == 7  # length, word size - 1
    assert [int(bits[37 + 4 * i:41 + 4 * i], 2) + 1 for i in range(4)] == [3, 4, 8, 16]
    assert bits[53:67] == "1" + "00" + "011" + "11111111"  # a repeat run of 4 values of 255


@pytest.mark.parametrize(("text", "problem"), [("05d0!", "not a compressed RLE character"),
                                               ("0d", "end in the middle")])
def test_bad_compressed_counts(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        rle.coco_decompress(text)


def test_decoders_refuse_counts_that_do_not_cover_the_mask() -> None:
    with pytest.raises(ValueError, match="cover 5 pixels"):
        rle.coco_decode([2, 3], 2, 3)
    with pytest.raises(ValueError, match="negative"):
        rle.cvat_decode([7, -1], 2, 3)
    with pytest.raises(ValueError, match="holds 4 values"):
        rle.ls_decode(rle.ls_encode(np.zeros(4, np.uint8)), 8)
    with pytest.raises(ValueError, match="ends early"):
        rle.ls_decode(rle.ls_encode(np.arange(8, dtype=np.uint8))[:8], 8)
