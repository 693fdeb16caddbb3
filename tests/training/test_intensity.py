"""PercentileScaled gives MONAI's ScaleIntensityRangePercentilesd values, from one partial sort."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

pytest.importorskip("monai", reason="the train extra (torch, monai) is not installed")

import torch
from monai.data.meta_tensor import MetaTensor
from monai.transforms.intensity.array import ScaleIntensityRangePercentiles
from monai.transforms.intensity.dictionary import ScaleIntensityRangePercentilesd

from medcycle.training.data import build_transform
from medcycle.training.intensity import TORCH_QUANTILE_MAX, PercentileScale, PercentileScaled, percentiles
from medcycle.training.order import order_statistics
from tests.training.conftest import quick


def monai(img: Any, lower: float = 1.0, upper: float = 99.0, b_min: float = 0.0, b_max: float = 1.0,
          clip: bool = True) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns "Divide by zero" on constant images
        out = ScaleIntensityRangePercentiles(lower, upper, b_min, b_max, clip=clip)(img)
    assert isinstance(out, torch.Tensor)
    return out


def ours(img: Any, lower: float = 1.0, upper: float = 99.0, b_min: float = 0.0, b_max: float = 1.0,
         clip: bool = True) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and ours does not warn at all
        out = PercentileScale(lower, upper, b_min, b_max, clip=clip)(img)
    assert isinstance(out, torch.Tensor)
    return out


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert type(a) is type(b)
    assert a.dtype == b.dtype == torch.float32
    assert a.shape == b.shape
    assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-6, atol=1e-7, equal_nan=True)


SHAPES = [(1, 64, 64), (1, 7, 9), (1, 1, 2), (1, 1, 1), (1, 16, 24, 20), (2, 8, 8), (1, 512, 512)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_equals_monai_on_random_images(shape: tuple[int, ...], dtype: Any, kind: str) -> None:
    rng = np.random.default_rng([*shape, kind == "torch"])
    arr = (rng.normal(size=shape) * 800 + 300).astype(dtype)
    arr.reshape(-1)[: arr.size // 3] = np.round(arr.reshape(-1)[: arr.size // 3])  # ties, like stored integers
    img: Any = arr if kind == "numpy" else torch.from_numpy(arr.copy())
    same(monai(img), ours(img))


@pytest.mark.parametrize(("lower", "upper", "b_min", "b_max", "clip"),
                         [(0, 100, 0.0, 1.0, True), (5, 95, -1.0, 1.0, True), (1, 99, 0.0, 255.0, False),
                          (25, 50, 0.0, 1.0, False), (0.5, 99.5, 0.0, 1.0, True)])
def test_equals_monai_for_other_settings(lower: float, upper: float, b_min: float, b_max: float, clip: bool) -> None:
    img = np.random.default_rng(3).gamma(2.0, 100.0, size=(1, 96, 80)).astype(np.float32)
    a, b = monai(img, lower, upper, b_min, b_max, clip), ours(img, lower, upper, b_min, b_max, clip)
    same(a, b)
    if not clip:
        assert float(b.min()) < b_min and float(b.max()) > b_max  # out-of-range values really were kept


def test_equals_monai_above_torch_quantiles_limit() -> None:
    """MONAI switches to np.percentile above 1,000,000 values: so do we, and volumes match too."""
    img = np.random.default_rng(5).normal(size=(1, 104, 100, 100)).astype(np.float32) * 1000
    assert img.size > TORCH_QUANTILE_MAX
    same(monai(img), ours(img))


def test_percentiles_equal_torch_quantile_exactly() -> None:
    t = torch.from_numpy(np.random.default_rng(9).normal(size=(1, 300, 301)).astype(np.float32))
    got = percentiles(t, (1.0, 37.5, 99.0))
    want = [torch.quantile(t, torch.tensor(q / 100.0)) for q in (1.0, 37.5, 99.0)]
    assert [float(g) for g in got] == [float(w) for w in want]


@pytest.mark.parametrize("shape", [(1, 32, 32), (1, 4, 8, 8)], ids=str)
@pytest.mark.parametrize("value", [0.0, 1234.5, -7.0])
def test_constant_image_maps_to_b_min_as_monai(shape: tuple[int, ...], value: float) -> None:
    img = np.full(shape, value, dtype=np.float32)
    out = ours(img)
    same(monai(img), out)
    assert torch.all(torch.as_tensor(out) == 0.0)


def test_constant_but_for_outliers_is_not_divided_by_zero() -> None:
    """lo == hi when more than 98 % of the pixels are equal: MONAI does not clip then (img - lo + b_min)."""
    img = np.zeros((1, 20, 20), dtype=np.float32)
    img[0, 0, 0], img[0, 0, 1] = 50.0, -3.0
    out = ours(img)
    same(monai(img), out)
    assert float(out.max()) == 50.0 and float(out.min()) == -3.0


@pytest.mark.parametrize("size", [(1, 16, 16), (1, 512, 512)], ids=str)
def test_nan_gives_nan_everywhere_as_monai(size: tuple[int, ...]) -> None:
    img = np.random.default_rng(1).random(size).astype(np.float32)
    img[0, 3, 4] = np.nan
    a, b = monai(img), ours(img)
    same(a, b)
    assert torch.isnan(torch.as_tensor(b)).all()


def test_infinities_as_monai() -> None:
    img = np.random.default_rng(2).random((1, 50, 50)).astype(np.float32)
    img[0, :30, 0] = np.inf
    img[0, :30, 1] = -np.inf
    same(monai(img), ours(img))


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.int32])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_integer_images_are_scaled_as_float32(dtype: Any, kind: str) -> None:
    """MONAI's torch.quantile refuses integers; ours reads them as float32, as the training readers do."""
    arr = np.random.default_rng(4).integers(0, 200, size=(1, 40, 30)).astype(dtype)
    img: Any = arr if kind == "numpy" else torch.from_numpy(arr)
    with pytest.raises(RuntimeError, match="float or double"):
        monai(img)
    same(monai(arr.astype(np.float32)), ours(img))


def test_metadata_is_kept_as_monai_keeps_it() -> None:
    affine = torch.diag(torch.tensor([0.5, 0.7, 1.0, 1.0], dtype=torch.float64))
    img = MetaTensor(torch.rand(1, 20, 30) * 100, affine=affine, meta={"source": "x"})
    a, b = monai(img), ours(img)
    same(a, b)
    assert isinstance(b, MetaTensor)
    assert torch.equal(b.affine, a.affine) and b.meta["source"] == "x"
    assert torch.equal(torch.as_tensor(img), torch.as_tensor(MetaTensor(img)))  # the input is not changed


def test_input_is_not_modified() -> None:
    arr = np.random.default_rng(6).normal(size=(1, 30, 30)).astype(np.float32)
    before = arr.copy()
    ours(arr)
    ours(torch.from_numpy(arr))
    assert np.array_equal(arr, before)


def test_dictionary_transform_equals_monai() -> None:
    rng = np.random.default_rng(7)
    item = {"image": rng.normal(size=(1, 40, 40)).astype(np.float32), "mask": np.ones((1, 40, 40), np.float32)}
    a = ScaleIntensityRangePercentilesd("image", 1, 99, 0.0, 1.0, clip=True)(item)
    b = PercentileScaled("image", 1, 99, 0.0, 1.0, clip=True)(item)
    same(a["image"], b["image"])
    assert b["mask"] is item["mask"]  # other keys untouched


@pytest.mark.parametrize("q", [-1.0, 100.5])
def test_percentiles_out_of_range_are_refused(q: float) -> None:
    with pytest.raises(ValueError, match="range"):
        PercentileScale(q, 99.0)
    with pytest.raises(ValueError, match="range"):
        PercentileScale(1.0, q)


def test_build_transform_uses_it_and_matches_monai_pipeline() -> None:
    """The evaluation transform of a percentile config equals the one MONAI's transform would make."""
    from monai.transforms.compose import Compose

    config = quick("classification-2d")
    transform = build_transform(config, 2, train=False)
    steps = list(transform.transforms)
    scaled = [s for s in steps if isinstance(s, PercentileScaled)]
    assert len(scaled) == 1
    assert not any(isinstance(s, ScaleIntensityRangePercentilesd) for s in steps)
    reference = Compose([ScaleIntensityRangePercentilesd("image", 1, 99, 0.0, 1.0, clip=True), *steps[2:]])
    mine = Compose(steps[1:])
    image = (np.random.default_rng(8).normal(size=(1, 96, 80)) * 500 + 1000).astype(np.float32)
    a, b = reference({"image": image})["image"], mine({"image": image})["image"]
    assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-6, atol=1e-7)


# -- order statistics ---------------------------------------------------------------------------------------
def _arrays() -> dict[str, Any]:
    rng = np.random.default_rng(11)
    n = 512 * 512
    periodic = np.tile(np.r_[np.zeros(63), 1000.0], n // 64).astype(np.float32)  # in step with the sample stride
    ramp = np.arange(n, dtype=np.float32)
    nan = rng.random(n).astype(np.float32)
    nan[::5000] = np.nan
    return {
        "normal": rng.normal(size=n).astype(np.float32),
        "ties": rng.integers(0, 5, n).astype(np.float32),
        "int16": rng.integers(-1000, 3000, n).astype(np.int16),
        "float64": rng.gamma(2.0, 1.0, n),
        "constant": np.full(n, 3.0, np.float32),
        "periodic": periodic,
        "sorted": ramp,
        "reversed": ramp[::-1].copy(),
        "nan": nan,
        "inf": np.r_[np.full(n // 50, np.inf), rng.random(n - n // 50)].astype(np.float32),
        "small": rng.random(300).astype(np.float32),
        "odd size": rng.random(100_003).astype(np.float32),
    }


ARRAYS = _arrays()


@pytest.mark.parametrize("name", list(ARRAYS))
def test_order_statistics_equal_numpy_partition(name: str) -> None:
    flat = ARRAYS[name]
    before = flat.copy()
    n = flat.size
    for ranks in ([int(0.01 * (n - 1)), int(0.01 * (n - 1)) + 1, int(0.99 * (n - 1)), int(0.99 * (n - 1)) + 1],
                  [0, n - 1], [n // 2], [n - 1, 0, n // 3, n // 3], [5, 7, int(0.995 * n)]):
        want = np.partition(flat, np.unique(ranks))[ranks]
        got = order_statistics(flat, ranks)
        assert got.dtype == flat.dtype
        assert np.array_equal(got, want, equal_nan=True), ranks
    assert np.array_equal(flat, before, equal_nan=True)


def test_order_statistics_refuse_ranks_outside() -> None:
    with pytest.raises(IndexError):
        order_statistics(np.zeros(10), [10])
    assert order_statistics(np.zeros(10), []).size == 0
