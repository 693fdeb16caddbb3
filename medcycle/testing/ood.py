"""In- and out-of-distribution cases for the OOD gate's tests and ``bench/ood.py`` — nothing downloaded.

In distribution (a chest X-ray model's world): synthetic chest radiographs from the demo data generator on
every demo scanner profile, and random crops of the real chest CR of pydicom-data (``RG1_UNCR.dcm``).
Out of distribution: the tibia CR (``RG3_UNCR.dcm``) and its crops, CT / MR / US / NM / secondary-capture
files from pydicom and pydicom-data, synthetic metal canisters on air (a gas cylinder X-rayed on a plate —
with a lying chest header, so only the pixels can give it away) and natural images from scikit-image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

CHEST_HEADER = {"Modality": "CR", "BodyPartExamined": "CHEST", "ViewPosition": "PA",
                "PhotometricInterpretation": "MONOCHROME2"}
OTHER_FILES = ("CT_small.dcm", "MR_small.dcm", "693_UNCR.dcm", "MR2_UNCR.dcm", "US1_UNCR.dcm", "OBXXXX1A.dcm",
               "JPEG2000_UNC.dcm", "emri_small.dcm", "SC_rgb.dcm",
               "MR-SIEMENS-DICOM-WithOverlays.dcm", "liver.dcm")
NATURAL = ("camera", "astronaut", "coffee", "chelsea", "moon", "coins", "page", "text", "rocket", "clock", "grass",
           "gravel", "brick", "cell", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    kind: str  # chest-synthetic, chest-real, tibia, dicom-other, canister, natural
    pixels: npt.NDArray[Any]
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def monochrome1(self) -> bool:
        return str(self.header.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"


def _file(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not among the installed pydicom test files")
    return str(path)


@cache
def _read(name: str) -> tuple[npt.NDArray[Any], dict[str, Any]]:
    import pydicom

    ds = pydicom.dcmread(_file(name), force=True)  # a few test files lack the preamble
    header = {k: ds.get(k) for k in ("Modality", "BodyPartExamined", "ViewPosition", "PhotometricInterpretation",
                                     "SOPClassUID", "Rows", "Columns", "PixelSpacing", "ImageType")}
    pixels = ds.pixel_array
    if header["PhotometricInterpretation"] == "PALETTE COLOR":
        from pydicom.pixels.processing import apply_color_lut

        pixels = apply_color_lut(pixels, ds)
        header["PhotometricInterpretation"] = "RGB"
    elif header["PhotometricInterpretation"] and str(header["PhotometricInterpretation"]).startswith("YBR"):
        from pydicom.pixels.processing import convert_color_space

        pixels = convert_color_space(pixels, str(header["PhotometricInterpretation"]), "RGB")
    return np.asarray(pixels), {k: v for k, v in header.items() if v is not None}


def chest_synthetic(n: int, seed: int) -> Iterator[Case]:
    from medcycle.training.demo_data import SCANNERS, chest_radiograph, stored_values

    rng = np.random.default_rng(seed)
    for i in range(n):
        scanner = SCANNERS[i % len(SCANNERS)]
        a, _mask, _box = chest_radiograph(int(rng.choice([128, 192, 256])), rng, lesion=bool(rng.integers(0, 2)))
        header = {**CHEST_HEADER, "PhotometricInterpretation": "MONOCHROME1" if scanner.monochrome1 else "MONOCHROME2"}
        yield Case(f"chest-synthetic-{i}", "chest-synthetic", stored_values(a, scanner, rng), header)


def crops(pixels: npt.NDArray[Any], n: int, seed: int, *, low: float = 0.7, high: float = 0.95
          ) -> Iterator[npt.NDArray[Any]]:
    """Random crops keeping ``low``–``high`` of each side (what a collimator or a different field does)."""
    rng = np.random.default_rng(seed)
    rows, cols = pixels.shape[:2]
    for _ in range(n):
        h, w = int(rows * rng.uniform(low, high)), int(cols * rng.uniform(low, high))
        r, c = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
        yield pixels[r:r + h, c:c + w]


def chest_real(n: int, seed: int) -> Iterator[Case]:
    pixels, header = _read("RG1_UNCR.dcm")
    for i, crop in enumerate(crops(pixels, n, seed)):
        yield Case(f"chest-cr-crop-{i}", "chest-real", crop, header)


def tibia(n: int, seed: int) -> Iterator[Case]:
    pixels, header = _read("RG3_UNCR.dcm")
    yield Case("tibia-cr", "tibia", pixels, header)
    for i, crop in enumerate(crops(pixels, n - 1, seed)):
        yield Case(f"tibia-cr-crop-{i}", "tibia", crop, header)


def other_dicom() -> Iterator[Case]:
    for name in OTHER_FILES:
        pixels, header = _read(name)
        yield Case(name, "dicom-other", pixels, header)


def canister(seed: int, size: int = 256) -> Case:
    """A metal gas canister X-rayed on a plate: a saturated cylinder with rounded ends and a valve, on air,
    stored as a 12-bit CR with a chest header (the worst case: only the pixels tell)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    angle = rng.uniform(-0.6, 0.6)
    u = (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle)
    v = -(xx - 0.5) * np.sin(angle) + (yy - 0.5) * np.cos(angle)
    radius, half = rng.uniform(0.12, 0.22), rng.uniform(0.25, 0.38)
    body = (np.abs(u) < radius) & (np.abs(v) < half)
    ends = (u**2 + (np.abs(v) - half) ** 2) < radius**2
    valve = (np.abs(u) < radius * 0.3) & (v < -half - radius * 0.6) & (v > -half - radius * 1.4)
    a = np.full((size, size), rng.uniform(0.0, 0.05))  # air: dark on the plate
    wall = np.clip(1 - (u / radius) ** 2, 0, 1) ** 0.5
    a = np.where(body | ends, 0.85 + 0.15 * wall, a)
    a = np.where(valve, 1.0, a)
    stored = np.clip(a * 4095 + rng.normal(0, 20, a.shape), 0, 4095)
    return Case(f"canister-{seed}", "canister", stored.astype(np.uint16), dict(CHEST_HEADER))


def natural() -> Iterator[Case]:
    try:
        import skimage.data as data
    except ImportError:
        return
    for name in NATURAL:
        yield Case(f"natural-{name}", "natural", np.asarray(getattr(data, name)()), {})


def in_distribution(n_synthetic: int, n_real: int, seed: int) -> list[Case]:
    return [*chest_synthetic(n_synthetic, seed), *chest_real(n_real, seed + 1)]


def out_of_distribution(n_tibia: int, n_canisters: int, seed: int) -> list[Case]:
    return [*tibia(n_tibia, seed), *other_dicom(), *(canister(seed + i) for i in range(n_canisters)), *natural()]
