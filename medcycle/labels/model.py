"""The in-memory annotation model: images, classes and annotations (class, box, polygon, mask).

Coordinates are pixels of the image the annotation was drawn on: ``x`` along columns, ``y`` along rows,
origin at the top-left corner of the top-left pixel (so a box covering pixel (0, 0) alone is
``Box(0, 0, 1, 1)``); ``z`` is a slice index for annotations on one slice of a volume. Masks carry the
geometry they were drawn on (shape, spacing in mm, origin and direction) so they can be aligned to their
source series. Everything is immutable; a mask's array is made read-only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from medcycle.errors import ValidationFailed


class Kind(StrEnum):
    CLASS = "class"  # a label of the whole image / series / study
    BOX = "box"
    POLYGON = "polygon"
    MASK = "mask"


class Level(StrEnum):
    INSTANCE = "instance"
    SERIES = "series"
    STUDY = "study"


def _finite(*values: float, what: str) -> None:
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        raise ValidationFailed(f"{what} has a coordinate that is not a finite number: {values}",
                               hint="Coordinates are pixel positions (numbers).")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image annotations refer to: ``key`` is its catalog UID (or the file name in a tool's export)."""

    key: str
    width: int
    height: int
    depth: int | None = None  # slices, for volumes
    file_name: str | None = None  # as a labeling tool names it

    def __post_init__(self) -> None:
        if not self.key:
            raise ValidationFailed("an image needs a key", hint="Use the instance/series UID or the file name.")
        if self.width <= 0 or self.height <= 0 or (self.depth is not None and self.depth <= 0):
            raise ValidationFailed(f"image {self.key!r} has a non-positive size {self.width}x{self.height}",
                                   hint="Give the image's columns and rows in pixels.")


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box ``[x0, x1) × [y0, y1)`` in pixels, optionally on slice ``z``."""

    x0: float
    y0: float
    x1: float
    y1: float
    z: int | None = None

    def __post_init__(self) -> None:
        _finite(self.x0, self.y0, self.x1, self.y1, what="a box")
        if self.x1 < self.x0 or self.y1 < self.y0:
            raise ValidationFailed(f"box ({self.x0}, {self.y0}, {self.x1}, {self.y1}) has its corners swapped",
                                   hint="Give the top-left corner first: x0 <= x1 and y0 <= y1.")

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return self.width * self.height

    def iou(self, other: Box) -> float:
        """Intersection over union (0 for boxes on different slices; 1 for two identical empty boxes)."""
        if self.z != other.z:
            return 0.0
        iw = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        ih = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = iw * ih
        union = self.area + other.area - inter
        if union <= 0:
            return 1.0 if self == other else 0.0
        return inter / union


@dataclass(frozen=True, slots=True)
class Polygon:
    """A closed polygon (at least 3 points, not repeating the first) in pixels, optionally on slice ``z``."""

    points: tuple[tuple[float, float], ...]
    z: int | None = None

    def __post_init__(self) -> None:
        if len(self.points) < 3:
            raise ValidationFailed(f"a polygon needs at least 3 points, got {len(self.points)}",
                                   hint="Give the outline as x, y pairs.")
        for x, y in self.points:
            _finite(x, y, what="a polygon")

    def bounds(self) -> Box:
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        return Box(min(xs), min(ys), max(xs), max(ys), self.z)


@dataclass(frozen=True, slots=True, eq=False)
class Mask:
    """A 2D (rows, cols) or 3D (slices, rows, cols) mask: 0 background, ``value`` where the label is.

    ``spacing`` is in mm per axis in array order; ``origin`` and ``direction`` (flattened row-major
    cosines, patient LPS) are kept when known so the mask can be written back aligned to its series.
    """

    array: npt.NDArray[Any]
    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None
    z: int | None = None  # the slice a 2D mask lies on, in a volume

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim not in (2, 3):
            raise ValidationFailed(f"a mask must be 2D or 3D, got {arr.ndim}D {arr.shape}",
                                   hint="Give (rows, cols) or (slices, rows, cols).")
        if arr.dtype.kind not in "biu":
            raise ValidationFailed(f"a mask must hold integers or booleans, got {arr.dtype}",
                                   hint="Threshold probabilities first, e.g. mask = prob > 0.5.")
        if self.spacing is not None and (
            len(self.spacing) != arr.ndim or not all(s > 0 and math.isfinite(s) for s in self.spacing)
        ):
            raise ValidationFailed(f"mask spacing {self.spacing} does not fit a {arr.ndim}D mask",
                                   hint="Give one positive spacing (mm) per array axis.")
        arr = arr.copy()
        arr.flags.writeable = False
        object.__setattr__(self, "array", arr)

    @property
    def binary(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.array != 0)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask):
            return NotImplemented
        return (self.array.shape == other.array.shape and bool(np.array_equal(self.array, other.array))
                and self.spacing == other.spacing and self.origin == other.origin
                and self.direction == other.direction and self.z == other.z)

    __hash__ = None  # type: ignore[assignment]


Geometry = Box | Polygon | Mask


@dataclass(frozen=True, slots=True)
class Annotation:
    """One reader's statement about one image: a class, or a labelled box, polygon or mask."""

    image: str  # ImageRef.key
    label: str
    kind: Kind
    geometry: Geometry | None = None
    reader: str | None = None
    score: float | None = None  # a model's confidence, for pseudo-labels and detections
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.label:
            raise ValidationFailed(f"an annotation on {self.image!r} has no label", hint="Name its class.")
        expected: dict[Kind, type | None] = {Kind.CLASS: None, Kind.BOX: Box, Kind.POLYGON: Polygon,
                                             Kind.MASK: Mask}
        want = expected[Kind(self.kind)]
        if (want is None) != (self.geometry is None) or (want is not None and not isinstance(self.geometry, want)):
            got = type(self.geometry).__name__ if self.geometry is not None else "none"
            raise ValidationFailed(f"a {self.kind} annotation on {self.image!r} has geometry {got}",
                                   hint="Class labels have no geometry; boxes, polygons and masks need theirs.")


@dataclass(frozen=True, slots=True)
class AnnotationSet:
    """Images, the class list (in order: tools number classes) and the annotations on them."""

    images: tuple[ImageRef, ...]
    classes: tuple[str, ...]
    annotations: tuple[Annotation, ...]

    def __post_init__(self) -> None:
        keys = [i.key for i in self.images]
        if len(set(keys)) != len(keys):
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            raise ValidationFailed(f"images listed twice: {', '.join(dupes[:5])}", hint="Give each image once.")
        if len(set(self.classes)) != len(self.classes):
            raise ValidationFailed("a class is listed twice", hint="Give each class name once.")
        known, classes = set(keys), set(self.classes)
        for a in self.annotations:
            if a.image not in known:
                raise ValidationFailed(f"an annotation refers to unknown image {a.image!r}",
                                       hint="List every annotated image in images.")
            if a.label not in classes:
                raise ValidationFailed(f"annotation label {a.label!r} is not in the class list",
                                       hint=f"Add it to classes ({', '.join(self.classes) or 'none yet'}).")

    @classmethod
    def of(cls, images: Iterable[ImageRef], annotations: Iterable[Annotation],
           classes: Sequence[str] | None = None) -> AnnotationSet:
        """Build a set; ``classes`` defaults to the labels used, in order of first use."""
        anns = tuple(annotations)
        if classes is None:
            classes = list(dict.fromkeys(a.label for a in anns))
        return cls(tuple(images), tuple(classes), anns)

    def image(self, key: str) -> ImageRef:
        for i in self.images:
            if i.key == key:
                return i
        raise ValidationFailed(f"no image {key!r} in this set", hint="Use a key from images.")

    def on(self, key: str) -> list[Annotation]:
        return [a for a in self.annotations if a.image == key]
