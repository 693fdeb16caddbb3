"""Simulated readers: doctors of different skill drawing lesion masks, made by perturbing the true masks.

Each reader has a lesion-level **sensitivity** (the chance of finding a lesion that is there) and
**specificity** (the chance of drawing nothing on an image without one), and a hand: how far their outline
strays from the lesion (a shift of ``jitter`` pixels, the radius off by up to ``scale``). A found lesion is
the true mask shifted and grown or shrunk; a false positive is a round blob somewhere in the chest. Every
draw follows from the reader's name and the item, so a reading is the same on every run.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class SimulatedReader:
    name: str
    sensitivity: float
    specificity: float
    jitter: float  # standard deviation of the outline's shift, pixels at 128 across
    scale: float  # standard deviation of the relative change of the radius
    seconds: float  # typical time on one image

    def rng(self, item: str, seed: int = 0) -> np.random.Generator:
        return np.random.default_rng([seed, zlib.crc32(self.name.encode()), zlib.crc32(item.encode())])

    def read(self, truth: BoolArray, item: str, *, seed: int = 0) -> tuple[BoolArray, float]:
        """This reader's mask of ``item`` (empty: nothing found) and the seconds they spent on it."""
        rng = self.rng(item, seed)
        spent = float(max(5.0, rng.normal(self.seconds, self.seconds / 4)))
        size = truth.shape[0]
        if truth.any():
            if rng.random() >= self.sensitivity:
                return np.zeros_like(truth), spent
            return outline(truth, rng, self.jitter * size / 128, self.scale), spent
        if rng.random() < self.specificity:
            return np.zeros_like(truth), spent
        return blob(truth.shape, rng), spent


def outline(truth: BoolArray, rng: np.random.Generator, jitter: float, scale: float) -> BoolArray:
    """The true mask shifted by about ``jitter`` pixels and grown or shrunk by about ``scale`` of its radius."""
    from scipy import ndimage

    shift = rng.normal(0.0, jitter, 2)
    moved = ndimage.shift(truth.astype(np.float32), shift, order=0, mode="constant") > 0.5
    radius = float(np.sqrt(truth.sum() / np.pi))
    steps = round(float(rng.normal(0.0, scale)) * radius)
    if steps > 0:
        moved = ndimage.binary_dilation(moved, iterations=steps)
    elif steps < 0:
        shrunk = ndimage.binary_erosion(moved, iterations=-steps)
        moved = shrunk if shrunk.any() else moved
    return np.asarray(moved, dtype=bool)


def blob(shape: tuple[int, ...], rng: np.random.Generator) -> BoolArray:
    """A false positive: a disk of 4–7% of the width inside the chest's central region."""
    rows, cols = shape
    radius = rng.uniform(0.04, 0.07) * cols
    cy, cx = rng.uniform(0.3, 0.75) * rows, rng.uniform(0.2, 0.8) * cols
    yy, xx = np.mgrid[0:rows, 0:cols]
    return np.asarray((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2)


#: The readers of the demo's task: an expert, a resident and a novice, and the senior who adjudicates.
READERS = (
    SimulatedReader("dr-expert", sensitivity=0.97, specificity=0.97, jitter=1.0, scale=0.06, seconds=25),
    SimulatedReader("dr-resident", sensitivity=0.88, specificity=0.92, jitter=2.0, scale=0.12, seconds=40),
    SimulatedReader("dr-novice", sensitivity=0.7, specificity=0.85, jitter=3.5, scale=0.22, seconds=55),
)
SENIOR = SimulatedReader("dr-lead", sensitivity=0.99, specificity=0.99, jitter=0.5, scale=0.03, seconds=60)
