"""Pixel statistics of integer pixels come from a histogram: the same numbers as from the sorted values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from medcycle.catalog import pixels
from medcycle.catalog.pixels import pixel_stats

OPTIONS: list[dict[str, Any]] = [
    {},
    {"hounsfield": True},
    {"bits_stored": 12},
    {"bits_stored": 8, "monochrome1": True},
    {"monochrome1": True},
    {"rescale": (1.0, -1024.0), "hounsfield": True},  # CT stored values to HU
    {"rescale": (-2.5, 100.0)},  # a negative slope reverses the order
    {"rescale": (0.3, -7.1), "monochrome1": True, "bits_stored": 16},
    {"rescale": (0.0, 3.0)},  # every value the same after rescale
]


def _random_pixels(rng: np.random.Generator, dtype: str) -> np.ndarray:
    """Values over a range of at most four times their number (counted, not sorted), often far narrower."""
    info = np.iinfo(dtype)
    shape = (int(rng.integers(1, 60)), int(rng.integers(1, 60)))
    width = min(int(info.max) - int(info.min), int(rng.integers(0, 4 * shape[0] * shape[1] // 2 + 1)))
    if rng.random() < 0.3:  # a narrow range: many repeats
        width = min(width, int(rng.integers(0, 40)))
    lo = int(rng.integers(int(info.min), int(info.max) - width + 1))
    values = rng.integers(lo, lo + width + 1, shape).astype(dtype)
    return values[:, ::2] if rng.random() < 0.3 and values.shape[1] > 1 else values  # strided views too


def _sorted_definition(values: np.ndarray, monkeypatch: pytest.MonkeyPatch, **options: Any) -> pixels.PixelStats:
    """The statistics by the sort of the values (the histogram turned off)."""
    with monkeypatch.context() as m:
        m.setattr(pixels, "MAX_BINS_PER_VALUE", 0)
        stats = pixel_stats(values, **options)
    assert stats is not None
    return stats


def _same(got: pixels.PixelStats, expected: pixels.PixelStats) -> None:
    a, b = got.to_dict(), expected.to_dict()
    scale = max(1.0, abs(b["mean"]), b["std"])
    for name in a:
        if name in ("mean", "std"):  # sums in another order: the last digits may differ
            assert a[name] == pytest.approx(b[name], rel=1e-12, abs=1e-12 * scale), name
        else:
            assert a[name] == b[name], name


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", ">u2", ">i2"])
@pytest.mark.parametrize("seed", range(6))
def test_histogram_gives_the_statistics_of_the_sorted_values(
    dtype: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng([seed, len(dtype), ord(dtype[-1])])
    for _ in range(4):
        values = _random_pixels(rng, dtype)
        assert pixels._histogram(values.reshape(-1)) is not None
        for options in OPTIONS:
            got = pixel_stats(values, **options)
            assert got is not None
            _same(got, _sorted_definition(values, monkeypatch, **options))


@pytest.mark.parametrize("options", OPTIONS)
def test_histogram_statistics_match_numpy(options: dict[str, Any]) -> None:
    values = np.random.default_rng(7).integers(-1024, 3072, (128, 128)).astype(np.int16)
    stats = pixel_stats(values, **options)
    assert stats is not None
    flat = values.astype(np.float64).reshape(-1)
    if "rescale" in options:
        flat = flat * options["rescale"][0] + options["rescale"][1]
    if options.get("monochrome1"):
        bits = options.get("bits_stored")
        top = 2.0**bits - 1 if bits and flat.min() >= 0 and flat.max() <= 2**bits - 1 else flat.min() + flat.max()
        flat = top - flat
    expected = np.percentile(flat, [1, 5, 50, 95, 99])
    got = [stats.p01, stats.p05, stats.p50, stats.p95, stats.p99]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)
    assert stats.mean == pytest.approx(flat.mean(), rel=1e-12, abs=1e-9)
    assert stats.std == pytest.approx(flat.std(), rel=1e-12, abs=1e-9)
    if options.get("hounsfield"):
        assert stats.air_fraction == np.count_nonzero(flat < -900) / flat.size


def test_constant_images_and_extremes(monkeypatch: pytest.MonkeyPatch) -> None:
    for values in (
        np.full((8, 8), 7, np.uint16),
        np.full((3, 5), -128, np.int8),
        np.array([0, 65535], np.uint16),  # a range far wider than the values: sorted instead
        np.array([-32768, 32767, 0], np.int16),
        np.array([255], np.uint8),
    ):
        for options in OPTIONS:
            got = pixel_stats(values, **options)
            assert got is not None
            _same(got, _sorted_definition(values, monkeypatch, **options))
    constant = pixel_stats(np.full((4, 4), 100, np.uint16))
    assert constant is not None and constant.std == 0.0 and constant.p01 == constant.p99 == constant.mean == 100.0
    assert constant.saturated_fraction == 1.0 and constant.air_fraction == 1.0


def test_empty_pixels_have_no_statistics() -> None:
    assert pixel_stats(np.zeros((0, 4), np.uint16)) is None
    assert pixel_stats(np.zeros(0, np.int8), hounsfield=True, rescale=(1.0, -1024.0)) is None


def test_wide_ranges_fall_back_to_sorting(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.array([0, 1000, 65535, 3], np.uint16)
    assert pixels._histogram(values) is None  # 65,536 bins for 4 values
    narrow = np.arange(100, dtype=np.uint16)
    counted = pixels._histogram(narrow)
    assert counted is not None and counted[0][0] == 0 and counted[0][-1] == 99 and int(counted[1].sum()) == 100


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("integers", ["uint16", "int16"])
def test_whole_number_floats_are_counted_with_the_statistics_of_the_floats(
    dtype: str, integers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng([len(dtype), len(integers)])
    for _ in range(4):
        values = _random_pixels(rng, integers).astype(dtype)  # a decoder's float of integer stored values
        taken = pixels._as_small_integers(values.reshape(-1))
        assert taken.dtype == np.dtype(integers) or taken.dtype == np.uint16  # int16-range values ≥ 0 fit uint16
        np.testing.assert_array_equal(taken.astype(np.float64), values.reshape(-1).astype(np.float64))
        for options in OPTIONS:
            got = pixel_stats(values, **options)
            with monkeypatch.context() as m:  # the floats' own path: partition, float comparisons
                m.setattr(pixels, "_as_small_integers", lambda flat: flat)
                expected = pixel_stats(values, **options)
            assert got is not None and expected is not None
            _same(got, expected)


def test_floats_that_are_not_small_whole_numbers_stay_floats() -> None:
    for values in (
        np.array([0.5, 1.0, 2.0], np.float32),  # a fraction
        np.array([0.0, np.nan, 3.0]),  # not finite: filtered on the float path
        np.array([0.0, np.inf]),
        np.array([-1.0, 40000.0]),  # wider than either 16-bit range
        np.array([70000.0, 1.0]),
    ):
        assert pixels._as_small_integers(values) is values
    stats = pixel_stats(np.array([1.0, np.nan, 3.0, 5.0]))
    assert stats is not None and stats.p50 == 3.0  # the NaN left out, as before


@pytest.mark.parametrize("shape", [(512, 512), (2048, 1536), (64, 512, 512)])
def test_large_images_are_sampled_close_to_their_whole(shape: tuple[int, ...]) -> None:
    """A CT-like slice, a radiograph and a volume: the statistics of the stratified sample sit within a few tenths
    of a percent of rank of the whole image's, and the mean within a hundredth of a standard deviation."""
    rng = np.random.default_rng(len(shape) * 1000 + shape[-1])
    grid = np.meshgrid(*(np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape), indexing="ij")
    radius = np.sqrt(sum(g * g for g in grid))
    body = np.where(radius < 0.8, 40.0 + 900.0 * np.exp(-8 * radius**2), -1000.0)  # a disc of tissue in air
    whole = (body + rng.normal(0.0, 60.0, shape)).clip(-1024, 3071).astype(np.int16)
    assert whole.size > pixels.MAX_VALUES
    stats = pixel_stats(whole, hounsfield=True)
    assert stats is not None
    flat = np.sort(whole.reshape(-1).astype(np.float64))
    for q, value in zip((0.01, 0.05, 0.50, 0.95, 0.99), (stats.p01, stats.p05, stats.p50, stats.p95, stats.p99),
                        strict=True):
        rank = np.searchsorted(flat, value, "left") / flat.size, np.searchsorted(flat, value, "right") / flat.size
        assert rank[0] - 0.003 <= q <= rank[1] + 0.003, (q, value, rank)
    assert abs(stats.mean - flat.mean()) < 0.01 * flat.std()
    assert stats.std == pytest.approx(flat.std(), rel=0.01)
    assert stats.air_fraction == pytest.approx(np.count_nonzero(flat < -900) / flat.size, abs=0.003)


@pytest.mark.parametrize("n", [pixels.MAX_VALUES + 1, 3 * pixels.MAX_VALUES - 1, 512 * 512 * 64])
def test_sample_places_are_one_per_run_and_fixed(n: int) -> None:
    places = pixels._sample_places(n)
    bounds = np.arange(places.size + 1) * n // places.size
    assert places.size == pixels.MAX_VALUES and places[0] >= 0 and places[-1] < n
    assert np.all(np.diff(places) > 0)  # ascending, none twice
    assert np.all(places >= bounds[:-1]) and np.all(places < bounds[1:])  # one in each run
    assert np.array_equal(places, pixels._sample_places.__wrapped__(n))  # the same places every time, every process
    values = np.arange(n, dtype=np.int64)
    assert np.array_equal(pixels._subsample(values), places)  # C order: the flat places of pixel_array's values
    assert np.array_equal(pixels._subsample(values.reshape(-1, 1)[::-1][::-1]), places)
