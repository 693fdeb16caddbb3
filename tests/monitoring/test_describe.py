"""texture(): the faster float32 computation keeps the float64 definition (reference kept here), on the central
256 x 256 window of the middle plane."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy.ndimage import gaussian_filter

from medcycle.monitoring.describe import (
    TEXTURE_SIDE,
    _central_gradient,
    _percentiles_1_99,
    _smooth,
    central_window,
    image_statistics,
    texture,
)


def reference_texture(values: npt.NDArray[Any]) -> tuple[float, float]:
    """The definition, as first written: float64, np.percentile, gaussian_filter, np.gradient, hypot."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].mean(axis=-1)
    while a.ndim > 2:
        a = a[a.shape[0] // 2]
    if a.ndim != 2 or min(a.shape) < 4:
        return 0.0, 0.0
    h, w = a.shape  # the central 256 pixels of each longer axis
    a = a[max(0, (h - 256) // 2):max(0, (h - 256) // 2) + 256, max(0, (w - 256) // 2):max(0, (w - 256) // 2) + 256]
    a = np.where(np.isfinite(a), a, 0.0)
    lo, hi = np.percentile(a, [1, 99])
    if hi <= lo:
        return 0.0, 0.0
    w = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
    noise = float(np.std(w - gaussian_filter(w, 1.0)))
    gy, gx = np.gradient(w)
    return noise, float(np.mean(np.hypot(gx, gy)))


def radiograph(size: int = 512, seed: int = 0) -> npt.NDArray[np.float32]:
    """A smooth body with ribs-like structure, detector noise and a collimated (saturated) border, 12 bits."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    body = 2500 * np.exp(-((x - 0.5) ** 2 / 0.08 + (y - 0.5) ** 2 / 0.15)) + 300 * np.sin(40 * y) ** 2
    img = body + rng.normal(0, 40, (size, size))
    img[:, : size // 20] = 4095
    return np.clip(np.round(img), 0, 4095).astype(np.float32)


def close(got: tuple[float, float], want: tuple[float, float], rel: float = 1e-6) -> None:
    assert got[0] == pytest.approx(want[0], rel=rel, abs=1e-9)
    assert got[1] == pytest.approx(want[1], rel=rel, abs=1e-9)


CASES: dict[str, Any] = {
    "radiograph 512 float32": radiograph(),
    "radiograph 256 uint16": radiograph(256, 1).astype(np.uint16),
    "radiograph int16 with negatives": (radiograph(128, 2) - 1024).astype(np.int16),
    "CT-like float64 volume (middle slice)": np.random.default_rng(3).normal(-300, 400, (9, 64, 48)),
    "float32 volume": np.random.default_rng(4).gamma(2.0, 50.0, (5, 40, 70)).astype(np.float32),
    "uint8 RGB": np.random.default_rng(5).integers(0, 256, (48, 40, 3)).astype(np.uint8),
    "uint8 gray": np.random.default_rng(6).integers(0, 256, (33, 65)).astype(np.uint8),
    "int32 large values": np.random.default_rng(7).integers(-(2**30), 2**30, (40, 40)).astype(np.int32),
    "small 4x4": np.arange(16, dtype=np.float32).reshape(4, 4),
    "odd shape": np.random.default_rng(8).random((5, 97)).astype(np.float32) * 1e4,
    "bool": np.random.default_rng(9).random((30, 30)) > 0.5,
    "float16": np.random.default_rng(10).random((30, 31)).astype(np.float16),
    "radiograph 2048 uint16": radiograph(2048, 17).astype(np.uint16),
    "radiograph 701 x 300 int16": (radiograph(701, 18)[:, :300] - 99).astype(np.int16),
    "wide strip 8 x 3001": np.random.default_rng(19).integers(0, 4096, (8, 3001)).astype(np.uint16),
    "float64 volume of 600 x 520 slices": np.random.default_rng(20).normal(40, 300, (3, 600, 520)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_texture_equals_the_float64_definition(name: str) -> None:
    close(texture(CASES[name]), reference_texture(CASES[name]))


def test_texture_with_non_finite_values_counts_them_as_zero() -> None:
    img = radiograph(128, 11)
    img[10:20, 10:20] = np.nan
    img[30, :] = np.inf
    img[40, :] = -np.inf
    before = img.copy()
    close(texture(img), reference_texture(img))
    assert np.array_equal(img, before, equal_nan=True)  # the caller's pixels are not changed


@pytest.mark.parametrize(("shape", "window"), [((256, 256), (0, 256, 0, 256)), ((257, 100), (0, 256, 0, 100)),
                                               ((512, 300), (128, 384, 22, 278)), ((8, 3001), (0, 8, 1372, 1628))])
def test_the_window_is_the_centre_of_each_longer_axis(shape: tuple[int, int], window: tuple[int, ...]) -> None:
    plane = np.arange(shape[0] * shape[1]).reshape(shape)
    got = central_window(plane)
    assert got.shape == (min(shape[0], TEXTURE_SIDE), min(shape[1], TEXTURE_SIDE))
    assert np.array_equal(got, plane[window[0]:window[1], window[2]:window[3]])
    assert np.shares_memory(got, plane)  # a view: nothing copied before the working copy


def test_a_large_radiograph_costs_what_its_central_window_does() -> None:
    """Outside the central window nothing counts: the work is bounded by the window, not the image."""
    img = radiograph(2048, 24).astype(np.uint16)
    other = np.zeros_like(img)
    other[896:1152, 896:1152] = img[896:1152, 896:1152]
    assert texture(img) == texture(other) == texture(img[896:1152, 896:1152])


@pytest.mark.parametrize("img", [np.full((32, 32), 7.0), np.zeros((3, 64)), np.ones(10), np.zeros((2, 2, 2)),
                                 np.r_[np.zeros(1000), np.ones(5)].reshape(5, 201)])
def test_degenerate_images_give_zero(img: npt.NDArray[Any]) -> None:
    assert texture(img) == reference_texture(img) == (0.0, 0.0)


@pytest.mark.parametrize("size", [256, 1024])
def test_blur_and_noise_still_move_the_measures(size: int) -> None:
    """At the detector's own pixel scale, however large the image."""
    img = radiograph(size, 12)
    noise, edges = texture(img)
    blurred = texture(gaussian_filter(img, 2.0))
    noisier = texture(img + np.random.default_rng(13).normal(0, 80, img.shape).astype(np.float32))
    assert blurred[0] < noise / 3 and blurred[1] < edges
    assert noisier[0] > 1.1 * noise


@pytest.mark.parametrize("n", [1, 2, 3, 99, 100, 101, 1000, 262_144])
def test_percentiles_equal_numpy(n: int) -> None:
    flat = np.random.default_rng(n).normal(size=n).astype(np.float32)
    assert _percentiles_1_99(flat) == tuple(float(v) for v in np.percentile(flat.astype(np.float64), [1, 99]))


@pytest.mark.parametrize("shape", [(4, 4), (5, 9), (64, 33)])
def test_central_gradient_equals_numpy(shape: tuple[int, int]) -> None:
    w = np.random.default_rng(14).random(shape).astype(np.float32)
    gy, gx = np.gradient(w)
    assert np.array_equal(_central_gradient(w, 0, np.empty_like(w)), gy)
    assert np.array_equal(_central_gradient(w, 1, np.empty_like(w)), gx)


def test_image_statistics_carry_the_texture() -> None:
    img = radiograph(128, 15)
    stats = image_statistics(img, bits_stored=12)
    close((stats["noise"], stats["edges"]), reference_texture(img))


@pytest.mark.parametrize("shape", [(4, 4), (3, 9), (5, 97), (64, 33), (128, 128)])
@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_smooth_equals_scipy_gaussian_filter(shape: tuple[int, int], sigma: float) -> None:
    w = np.random.default_rng(16).random(shape)
    np.testing.assert_allclose(_smooth(w, sigma), gaussian_filter(w, sigma), rtol=0, atol=1e-14)
    w32 = w.astype(np.float32)
    out = _smooth(w32, sigma)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, gaussian_filter(w, sigma), rtol=0, atol=1e-6)
