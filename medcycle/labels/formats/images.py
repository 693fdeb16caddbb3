"""Which image an export's entry means, and what a writer may put into a format.

Tools name images by file name — sometimes with a folder, sometimes with an upload prefix
(Label Studio stores ``/data/upload/3/8f1c2a9b-chest.png``). Given the images the export was made
from (``images=``), :class:`ImageIndex` maps those names back to their catalog keys and checks the
sizes the file states; without them, each name becomes an image keyed by that name.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from pathlib import PurePosixPath

import numpy as np
import numpy.typing as npt

from medcycle.errors import ValidationFailed
from medcycle.labels.formats.parsing import Where
from medcycle.labels.formats.rle import MAX_PIXELS
from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind, Mask, Polygon

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".jfif", ".dcm", ".dicom")
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio prefixes uploads with 8 hex digits


def canvas(ref: ImageRef, where: Where) -> npt.NDArray[np.uint8]:
    """An empty full-image mask, refusing sizes no real image has (a malformed size must not exhaust memory)."""
    if ref.width * ref.height > MAX_PIXELS:
        where.fail(f"puts a mask on a {ref.width}x{ref.height} image, over the {MAX_PIXELS} pixel limit",
                   "Check the image size in the file.")
    return np.zeros((ref.height, ref.width), dtype=np.uint8)


def export_name(ref: ImageRef) -> str:
    """The image's file name in a tool's export: its ``file_name``, else its key."""
    return ref.file_name or ref.key


def stem(name: str) -> str:
    """The name without an image suffix (``scans/a.png`` → ``scans/a``); a UID keeps its dots."""
    return name[: -len(PurePosixPath(name).suffix)] if name.lower().endswith(IMAGE_SUFFIXES) else name


def _base(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/").split("?")[0]).name


class ImageIndex:
    """Resolves a name found in an export to an :class:`ImageRef` (given, or made from the file)."""

    def __init__(self, images: Iterable[ImageRef] | None) -> None:
        self.given = images is not None
        self._tiers: list[dict[str, list[ImageRef]]] = [{}, {}, {}, {}]
        for ref in images or ():
            names = {ref.key, *(n for n in [ref.file_name] if n)}
            for name in names:
                for tier, key in enumerate((name, _base(name), stem(_base(name)), stem(name))):
                    bucket = self._tiers[tier].setdefault(key, [])
                    if ref not in bucket:
                        bucket.append(ref)

    def find(self, name: str) -> ImageRef | None:
        """Exact name, then file name without folders, then without suffix (unique matches only)."""
        base = _UPLOAD_PREFIX.sub("", _base(name))
        for tier, key in enumerate((name, _base(name), stem(_base(name)), stem(name))):
            hits = self._tiers[tier].get(key, [])
            if len(hits) == 1:
                return hits[0]
        hits = self._tiers[1].get(base, []) or self._tiers[2].get(stem(base), [])
        return hits[0] if len(hits) == 1 else None

    def resolve(self, name: str, width: int | None, height: int | None, where: Where,
                depth: int | None = None) -> ImageRef:
        """The image ``name`` means; the size given in the file must agree with a given image's."""
        if self.given:
            ref = self.find(name)
            if ref is None:
                where.fail(f"names image {name!r}, which is not among the given images",
                           "Pass the images the export was made from (images=...), matched by file name.")
            if width and height and (width, height) != (ref.width, ref.height):
                where.fail(f"gives image {name!r} the size {width}x{height}, but it is {ref.width}x{ref.height}",
                           "The annotations were drawn on another version of the image; check the export.")
            return ref
        if not width or not height:
            where.fail(f"gives no size for image {name!r}",
                       "Pass images=[ImageRef(key, width, height, file_name=...)] so coordinates can be placed.")
        with where.guard():
            return ImageRef(key=name, width=width, height=height, depth=depth, file_name=name)


class Collector:
    """Images (in first-seen order, each once) and annotations as a reader finds them."""

    def __init__(self) -> None:
        self.images: dict[str, ImageRef] = {}
        self.annotations: list[Annotation] = []
        self.classes: list[str] = []

    def image(self, ref: ImageRef, where: Where, *, again: bool = False) -> ImageRef:
        if ref.key in self.images and not again:
            where.fail(f"lists image {ref.key!r} a second time", "Give each image once.")
        self.images.setdefault(ref.key, ref)
        return ref

    def cls(self, name: str) -> str:
        if name not in self.classes:
            self.classes.append(name)
        return name

    def add(self, annotation: Annotation) -> None:
        self.cls(annotation.label)
        self.annotations.append(annotation)

    def build(self, classes: Iterable[str] | None = None) -> AnnotationSet:
        """The set; ``classes`` (a class list from the file or the caller) comes first, in its order."""
        order = list(dict.fromkeys([*(classes or ()), *self.classes]))
        return AnnotationSet(tuple(self.images.values()), tuple(order), tuple(self.annotations))


def check_writable(aset: AnnotationSet, fmt: str, kinds: Collection[Kind], *, planar: bool = True) -> None:
    """Refuse annotations the format cannot hold, naming the first one and what to do."""
    sizes = {i.key: i for i in aset.images}
    for n, a in enumerate(aset.annotations):
        what = f"annotation {n} ({a.kind} {a.label!r} on {a.image!r})"
        if a.kind not in kinds:
            raise ValidationFailed(f"{fmt} cannot hold {what}: it holds {', '.join(sorted(kinds))} annotations",
                                   hint=f"Leave {a.kind} annotations out of this export, or choose another format.")
        geom = a.geometry
        if planar and isinstance(geom, Box | Polygon | Mask) and geom.z is not None:
            raise ValidationFailed(f"{fmt} holds 2D images, but {what} lies on slice {geom.z}",
                                   hint="Export the slices as images first, or use NIfTI / DICOM SEG for volumes.")
        if planar and isinstance(geom, Mask):
            ref = sizes[a.image]
            if geom.array.shape != (ref.height, ref.width):
                raise ValidationFailed(f"{fmt}: {what} has a mask of shape {geom.array.shape}, but the image is "
                                       f"{ref.height} rows x {ref.width} columns",
                                       hint="Masks in 2D formats cover the whole image (rows, columns).")


def by_image(aset: AnnotationSet) -> dict[str, list[Annotation]]:
    """Annotations grouped per image, in the set's image order."""
    groups: dict[str, list[Annotation]] = {i.key: [] for i in aset.images}
    for a in aset.annotations:
        groups[a.image].append(a)
    return groups
