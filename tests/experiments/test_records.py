"""The record framing shared by journals and the ingest endpoint; image rendering; downsampling (no DB)."""

from __future__ import annotations

import io
import zlib
from array import array

import numpy as np
import pytest
from PIL import Image

from medcycle.errors import UsageError, ValidationFailed
from medcycle.experiments.images import contour, render
from medcycle.experiments.records import Kind, Record, decode_frames, metrics_record, split_metrics
from medcycle.experiments.runs import Series, downsample


def test_frames_round_trip_and_a_torn_tail_is_dropped() -> None:
    series = {"loss": (array("q", [1, 2]), array("d", [10.0, 11.0]), array("d", [0.5, float("nan")]))}
    records = [Record(Kind.START, {"project": "p"}, seq=1), metrics_record(series)]
    records[1].seq = 2
    data = b"".join(r.encode() for r in records)
    decoded, used = decode_frames(data)
    assert used == len(data) and [r.seq for r in decoded] == [1, 2]
    key, steps, times, values = next(split_metrics(decoded[1]))
    assert (key, list(steps), list(times), values[0]) == ("loss", [1, 2], [10.0, 11.0], 0.5)
    assert values[1] != values[1]  # NaN survives
    torn = data[:-3]
    assert [r.seq for r in decode_frames(torn, strict=False)[0]] == [1]
    with pytest.raises(ValidationFailed):
        decode_frames(torn)
    corrupt = bytearray(data)
    corrupt[-1] ^= 0xFF
    assert [r.seq for r in decode_frames(bytes(corrupt), strict=False)[0]] == [1]


def test_metric_records_are_validated() -> None:
    bad = Record(Kind.METRICS, {"keys": ["a"], "counts": [3]}, b"\0" * 24, seq=1)
    with pytest.raises(ValidationFailed):
        list(split_metrics(bad))
    bad = Record(Kind.METRICS, {"keys": ["a", "b"], "counts": [1]}, b"", seq=1)
    with pytest.raises(ValidationFailed):
        list(split_metrics(bad))
    body = b"\x00" * 13  # seq, kind, json length
    frame = len(body).to_bytes(4, "little") + zlib.crc32(body).to_bytes(4, "little") + body
    with pytest.raises(ValidationFailed):
        decode_frames(frame)  # kind 0 does not exist


def test_render_2d_3d_and_masks() -> None:
    png, meta = render(np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert Image.open(io.BytesIO(png)).size == (4, 3) and meta["panels"] == ["image"]
    png, meta = render(np.zeros((3, 20, 30)))  # channel-first RGB
    assert Image.open(io.BytesIO(png)).size == (30, 20)
    vol = np.random.default_rng(0).normal(size=(1, 10, 16, 16))  # (C, D, H, W)
    png, meta = render(vol, slices=4, axis=0)
    assert meta["panels"] == ["slice 2", "slice 4", "slice 6", "slice 8", "MIP"]
    assert meta["width"] == 5 * 16 + 4 * 4
    with pytest.raises(UsageError):
        render(np.zeros((2, 2, 2, 2, 2)))
    with pytest.raises(UsageError):
        render(np.zeros((4, 4)), mask=np.zeros((5, 5)))
    square = np.zeros((6, 6), dtype=bool)
    square[1:5, 1:5] = True
    edge = contour(square)
    assert edge.sum() == 12 and not edge[2:4, 2:4].any()


def test_downsampling_keeps_extremes_and_counts() -> None:
    n = 100_000
    values = np.sin(np.arange(n) / 1000.0)
    values[12_345] = 50.0  # a spike must survive
    s = Series("x", array("q", range(n)), array("d", range(n)), array("d", values.tolist()), n)
    small = downsample(s, 400)
    assert small.downsampled and small.count == n and len(small.values) <= 400
    assert 50.0 in small.values and small.steps[0] == 0 and small.steps[-1] == n - 1
    assert list(small.steps) == sorted(small.steps)
    assert downsample(s, 10**6) is s
