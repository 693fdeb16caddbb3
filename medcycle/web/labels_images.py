"""Item images for the labels pages: an item's slices, windowed, with readers' annotations drawn over them.

An item's **stack** is what the viewer's slice slider moves through: its instances that are not
quarantined, ordered by series, then instance number, each expanded into its frames (a multi-frame DICOM
or a NIfTI volume gives one plane per frame). Plane ``k`` of the stack is slice ``z = k`` of the item: a
box drawn on it carries ``z = k``, and a 3D mask's ``array[k]`` lies on it. For a NIfTI volume the planes
are shown as :mod:`medcycle.catalog.render` shows its middle slice (``[:, :, k]`` turned a quarter), and
masks are taken in that displayed orientation.

A mask painted in the browser is stored on the grid it was drawn on (:func:`stack_geometry`): a 2D image
gives a ``(rows, cols)`` mask with its pixel spacing; a volume a ``(slices, rows, cols)`` mask whose slice
``k`` is plane ``k``, with the series' spacing, origin and direction when the planes are one evenly spaced
single-frame DICOM series in slice order (either way along the normal), else in pixel units (no spacing).

Windowing is :func:`medcycle.catalog.render.to_uint8`'s: CT presets in HU, the file's own window, or the
1st-99th percentiles; MONOCHROME1 inverted as a viewer shows it. Overlays are drawn here, server-side, so
what a reviewer sees is exactly what the PNG holds: boxes and polygons as outlines, masks as contours
(never filled: the image under them must stay readable), one colour per layer (:data:`PALETTE`); the
consensus is drawn thicker in :data:`CONSENSUS_COLOR`.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.catalog import render
from medcycle.catalog.tables import InstanceRow, SeriesRow
from medcycle.errors import NotFound, UsageError, ValidationFailed
from medcycle.labels.model import Annotation, Box, Level, Mask, Polygon
from medcycle.objects.base import ObjectStore

# Distinct on grey images and for the common colour-vision deficiencies (Sasha Trubetskoy's list, reordered);
# yellow is kept for the consensus.
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
           "#800000", "#469990", "#000075", "#808000")
CONSENSUS_COLOR = "#ffe119"
ADJUDICATION_COLOR = "#ffffff"
DEFAULT_SIZE = 512  # pixels, longest side of a rendered plane
LINE = 2  # outline width in output pixels
CONSENSUS_LINE = 3


def reader_colors(readers: Sequence[str]) -> dict[str, str]:
    """One colour per reader, in the order given (the palette repeats past twelve readers)."""
    return {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(readers)}


# -- stacks -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Plane:
    """One displayable image: an instance, and the frame within it (``None``: its only image)."""

    instance: str
    digest: str
    format: str
    frame: int | None


@dataclass(frozen=True, slots=True)
class Stack:
    """The planes of an item and the size of its images in pixels as displayed (0 when the catalog lacks it)."""

    item: str
    planes: tuple[Plane, ...]
    width: int
    height: int
    modality: str | None

    @property
    def slices(self) -> int:
        return len(self.planes)

    @property
    def middle(self) -> int:
        return len(self.planes) // 2

    def plane(self, index: int | None) -> Plane:
        k = self.middle if index is None else index
        if not 0 <= k < len(self.planes):
            raise UsageError(f"slice {index} is outside this item's {len(self.planes)} slice(s)",
                             hint=f"Choose a slice from 0 to {len(self.planes) - 1}.")
        return self.planes[k]


def _display_size(fmt: str, rows: int | None, columns: int | None) -> tuple[int, int]:
    """(width, height) as shown: a NIfTI plane ``[:, :, k]`` is turned a quarter, so its axes swap."""
    if fmt == "nifti":
        return rows or 0, columns or 0
    return columns or 0, rows or 0


def item_stack(session: Session, level: Level | str, item: str) -> Stack:
    """The planes of ``item`` (an instance, series or study uid at ``level``) that may be shown.

    Raises:
        NotFound: the item has no instance in the catalog that is not quarantined.
    """
    level = Level(level)
    stmt = (select(InstanceRow.uid, InstanceRow.digest, InstanceRow.format, InstanceRow.frames, InstanceRow.rows,
                   InstanceRow.columns, InstanceRow.instance_number, InstanceRow.series_uid, SeriesRow.modality)
            .join(SeriesRow, SeriesRow.uid == InstanceRow.series_uid).where(InstanceRow.state == "ok"))
    if level is Level.INSTANCE:
        stmt = stmt.where(InstanceRow.uid == item)
    elif level is Level.SERIES:
        stmt = stmt.where(InstanceRow.series_uid == item)
    else:
        stmt = stmt.where(SeriesRow.study_uid == item)
    rows = sorted(session.execute(stmt), key=lambda r: (r.series_uid, r.instance_number is None,
                                                         r.instance_number or 0, r.uid))
    if not rows:
        raise NotFound(f"item {item!r} has no image in the catalog",
                       hint="Its instances may have been quarantined; ask a lead to check the catalog.")
    planes: list[Plane] = []
    for r in rows:
        frames = int(r.frames or 1)
        if frames > 1:
            planes.extend(Plane(r.uid, r.digest, r.format, f) for f in range(frames))
        else:
            planes.append(Plane(r.uid, r.digest, r.format, None))
    first = rows[0]
    width, height = _display_size(first.format, first.rows, first.columns)
    return Stack(item, tuple(planes), width, height, first.modality)


@dataclass(frozen=True, slots=True)
class Grid:
    """The pixel grid an item's masks are painted on: its size and, when known, where it lies (mm, LPS).

    ``spacing`` is in array order: ``(row, col)`` for one image, ``(slice, row, col)`` for a volume;
    ``origin`` and ``direction`` follow :mod:`medcycle.labels.formats.geometry` (volumes only).
    """

    width: int
    height: int
    slices: int
    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None

    def empty(self) -> npt.NDArray[np.uint8]:
        shape = (self.height, self.width) if self.slices == 1 else (self.slices, self.height, self.width)
        return np.zeros(shape, dtype=np.uint8)

    def mask(self, array: npt.NDArray[Any]) -> Mask:
        return Mask(array, spacing=self.spacing, origin=self.origin, direction=self.direction)


def _positive(*values: float | None) -> bool:
    return all(v is not None and v > 0 for v in values)


def _pixel_spacing(session: Session, stack: Stack, series: set[str]) -> tuple[float, ...] | None:
    """(row, col) spacing of a single image from its series; volumes get theirs from the slice headers only
    (slice thickness is not the distance between slices)."""
    if len(series) != 1 or stack.slices != 1:
        return None
    row = session.get(SeriesRow, next(iter(series)))
    if row is None or not _positive(row.pixel_spacing_row, row.pixel_spacing_col):
        return None
    return float(row.pixel_spacing_row or 0), float(row.pixel_spacing_col or 0)


def _placed(objects: ObjectStore, stack: Stack) -> tuple[tuple[float, ...], tuple[float, ...],
                                                          tuple[float, ...]] | None:
    """(spacing, origin, direction) of a single-frame DICOM volume whose planes are in slice order."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from medcycle.labels.formats.geometry import SeriesGeometry

    try:
        datasets = [pydicom.dcmread(io.BytesIO(objects.get(p.digest)), stop_before_pixels=True)
                    for p in stack.planes]
        geometry = SeriesGeometry.from_datasets(datasets)
    except (InvalidDicomError, ValidationFailed, ValueError, TypeError, AttributeError, KeyError):
        return None
    if geometry.shape != (stack.slices, stack.height, stack.width):
        return None
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    along = np.array([np.dot([float(v) for v in ds.ImagePositionPatient], direction[:, 2]) for ds in datasets])
    steps = np.diff(along)
    if np.all(steps > 0):
        return geometry.spacing, geometry.origin, geometry.direction
    if np.all(steps < 0):  # planes run against the normal: the same grid seen from its last slice
        direction[:, 2] = -direction[:, 2]
        origin = tuple(float(v) for v in datasets[0].ImagePositionPatient)
        return geometry.spacing, origin, tuple(float(v) for v in direction.ravel())
    return None


def stack_geometry(session: Session, objects: ObjectStore, stack: Stack, *, placed: bool = True) -> Grid:
    """The grid masks of ``stack`` are painted on (the size read from the first plane if the catalog lacks it).

    ``placed=False`` skips reading the slice headers for origin and direction (the size and spacing suffice).
    """
    width, height = stack.width, stack.height
    if width <= 0 or height <= 0:
        plane = stack.planes[0]
        rows, cols = load_plane(objects.get(plane.digest), plane).values.shape[:2]
        width, height = int(cols), int(rows)
    uids = sorted({p.instance for p in stack.planes})
    series = set(session.scalars(select(InstanceRow.series_uid).where(InstanceRow.uid.in_(uids[:1000]))))
    spacing = _pixel_spacing(session, stack, series)
    one_volume = stack.slices > 1 and len(series) == 1
    if placed and one_volume and all(p.format == "dicom" and p.frame is None for p in stack.planes):
        where = _placed(objects, Stack(stack.item, stack.planes, width, height, stack.modality))
        if where is not None:
            return Grid(width, height, stack.slices, *where)
    return Grid(width, height, stack.slices, spacing)


# -- loading one plane ------------------------------------------------------------------------------
def _dicom_frame(data: bytes, frame: int) -> render.Slice:
    import pydicom
    from pydicom.pixels.processing import apply_modality_lut

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        arr = ds.pixel_array
        color = int(ds.get("SamplesPerPixel", 1)) > 1
        if arr.ndim > (3 if color else 2):
            arr = arr[min(frame, arr.shape[0] - 1)]
        if not color:
            arr = apply_modality_lut(arr, ds)
    window = None
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        first = [v[0] if isinstance(v, list | pydicom.multival.MultiValue) else v for v in (center, width)]
        try:
            window = (float(first[0]), float(first[1]))
        except (TypeError, ValueError):
            window = None
    return render.Slice(np.asarray(arr, dtype=np.float64), ds.get("PhotometricInterpretation") == "MONOCHROME1",
                        window, color)


def _nifti_frame(data: bytes, frame: int) -> render.Slice:
    import gzip

    import nibabel as nib

    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    img: Any = nib.Nifti1Image.from_bytes(raw)
    arr = np.asanyarray(img.dataobj, dtype=np.float64)
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
        arr = arr[:, :, min(frame, arr.shape[2] - 1)]
    return render.Slice(np.rot90(arr), False, None, False)


def load_plane(data: bytes, plane: Plane) -> render.Slice:
    """The plane's pixel values after the modality LUT (CT in HU), with the file's window if it has one."""
    if plane.frame is None:
        return render.load_slice(data, plane.format)
    if plane.format == "dicom":
        return _dicom_frame(data, plane.frame)
    if plane.format == "nifti":
        return _nifti_frame(data, plane.frame)
    return render.load_slice(data, plane.format)


def _fit(width: int, height: int, size: int) -> tuple[int, int]:
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def render_plane(data: bytes, plane: Plane, *, preset: render.Preset = render.Preset.AUTO,
                 size: int = DEFAULT_SIZE) -> tuple[Image.Image, tuple[int, int]]:
    """The plane windowed into RGB with its longest side ``size`` (up or down), and its native (width, height)."""
    pixels = render.to_uint8(load_plane(data, plane), preset)
    img = Image.fromarray(pixels).convert("RGB")
    native = img.size
    out = _fit(native[0], native[1], size)
    if out != native:
        img = img.resize(out, Image.Resampling.LANCZOS if out[0] < native[0] else Image.Resampling.BILINEAR)
    return img, native


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# -- overlays ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Layer:
    """What one reader (or the consensus) drew on the item, in one colour."""

    name: str
    color: str
    annotations: tuple[Annotation, ...]
    width: int = LINE


def _on_slice(z: int | None, index: int) -> bool:
    """A geometry without a slice belongs to every slice (2D images; a box drawn on the whole volume)."""
    return z is None or z == index


def _mask_plane(mask: Mask, index: int, slices: int) -> npt.NDArray[np.bool_] | None:
    arr = mask.binary
    if arr.ndim == 2:
        return arr if _on_slice(mask.z, index) else None
    if arr.shape[0] == slices:
        return np.asarray(arr[index])
    if arr.shape[0] == 1:
        return np.asarray(arr[0])
    return None  # a volume drawn on another grid: nothing on this plane can be placed


def _contour(mask: npt.NDArray[np.bool_], size: tuple[int, int], width: int) -> npt.NDArray[np.bool_]:
    """The boundary of ``mask`` scaled (nearest) to ``size`` = (width, height), ``width`` pixels thick."""
    scaled = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0
    padded = np.pad(scaled, 1, constant_values=False)
    inner = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    edge = scaled & ~inner
    for _ in range(width - 1):  # grow inwards so the outline never covers what lies outside the mask
        grown = np.pad(edge, 1, constant_values=False)
        edge = scaled & (edge | grown[:-2, 1:-1] | grown[2:, 1:-1] | grown[1:-1, :-2] | grown[1:-1, 2:])
    return edge


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def draw_layers(img: Image.Image, native: tuple[int, int], layers: Sequence[Layer], *, index: int,
                slices: int) -> Image.Image:
    """``img`` (a rendering of plane ``index``) with each layer's boxes, polygons and mask contours drawn on it."""
    out = img.copy()
    sx, sy = out.size[0] / native[0], out.size[1] / native[1]
    for layer in layers:
        rgb = _rgb(layer.color)
        masks = [g for a in layer.annotations if isinstance(g := a.geometry, Mask)]
        if masks:
            arr = np.array(out)
            for mask in masks:
                plane = _mask_plane(mask, index, slices)
                if plane is not None and plane.any():
                    arr[_contour(plane, out.size, layer.width)] = rgb
            out = Image.fromarray(arr)
        draw = ImageDraw.Draw(out)
        for a in layer.annotations:
            g = a.geometry
            if isinstance(g, Box) and _on_slice(g.z, index):
                box = [g.x0 * sx, g.y0 * sy, max(g.x0 * sx, g.x1 * sx - 1), max(g.y0 * sy, g.y1 * sy - 1)]
                draw.rectangle(box, outline=rgb, width=layer.width)
            elif isinstance(g, Polygon) and _on_slice(g.z, index):
                points = [(x * sx, y * sy) for x, y in g.points]
                draw.line([*points, points[0]], fill=rgb, width=layer.width, joint="curve")
    return out
