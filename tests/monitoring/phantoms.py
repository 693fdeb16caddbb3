"""Cheap phantom studies for the drift tests: the demo scanners' intensity profiles, the shifts of the issue.

The images are the demo data's chest radiographs (32 × 32 to stay fast) stored as each demo detector stores
them; the input statistics are what serving logs (``medcycle.monitoring.describe``). The "model" is a stand-in
without a network (``bench/drift.py`` uses a trained CNN): its embedding is the image's 4 × 4 block means and
its lesion score is the true label blurred by noise, so a change of prevalence moves the scores as a good
classifier's would.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from medcycle.monitoring.describe import image_statistics
from medcycle.monitoring.signals import Case
from medcycle.training.demo_data import SCANNERS, Scanner, chest_radiograph, stored_values

SIZE = 32
NEW_SCANNER = Scanner("clinic-d", "Fabrikam Health", "DR-Nova", gain=1.4, offset=150, noise=45, bits=12, gamma=0.9)


@dataclass(frozen=True, slots=True)
class Shift:
    gain: float = 1.0
    new_scanner: float = 0.0
    blur: float = 0.0
    prevalence: float = 0.5


SHIFTS = {"intensity x1.15": Shift(gain=1.15), "new scanner": Shift(new_scanner=0.25), "blur 1.5": Shift(blur=1.5),
          "population": Shift(prevalence=0.95)}


@dataclass(frozen=True, slots=True)
class Study:
    values: np.ndarray  # after the modality LUT, MONOCHROME1 inverted
    stored: np.ndarray
    header: dict[str, Any]
    lesion: bool
    case: Case


def study(rng: np.random.Generator, shift: Shift = Shift()) -> Study:
    from scipy.ndimage import gaussian_filter

    scanner = SCANNERS[int(rng.integers(len(SCANNERS)))]
    if shift.new_scanner and rng.random() < shift.new_scanner:
        scanner = NEW_SCANNER
    if shift.gain != 1.0:
        scanner = replace(scanner, gain=scanner.gain * shift.gain, offset=scanner.offset * shift.gain)
    lesion = bool(rng.random() < shift.prevalence)
    a, _mask, _box = chest_radiograph(SIZE, rng, lesion)
    stored = stored_values(a, scanner, rng)
    values = stored.astype(np.float64) * scanner.slope + scanner.intercept
    if scanner.monochrome1:
        lo, hi = scanner.intercept, (2**scanner.bits - 1) * scanner.slope + scanner.intercept
        values = (lo + hi) - values
    if shift.blur:
        values = gaussian_filter(values, shift.blur)
    header = {"Manufacturer": scanner.manufacturer, "ManufacturerModelName": scanner.model, "Modality": "DX",
              "BodyPartExamined": "CHEST", "ViewPosition": "PA"}
    lo, hi = np.percentile(values, [1, 99])
    norm = np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1)
    embedding = norm.reshape(4, SIZE // 4, 4, SIZE // 4).mean(axis=(1, 3)).reshape(-1)
    score = float(np.clip(0.15 + 0.7 * lesion + rng.normal(0, 0.12), 0, 1))
    categorical = {"manufacturer": scanner.manufacturer, "device_model": scanner.model, "modality": "DX",
                   "body_part": "CHEST", "view_position": "PA"}
    case = Case(categorical, image_statistics(values), embedding, score, score >= 0.5, None)
    return Study(values, stored, header, lesion, case)


def cases(n: int, rng: np.random.Generator, shift: Shift = Shift()) -> list[Case]:
    return [study(rng, shift).case for _ in range(n)]
