"""The voxel grid of a DICOM series, for masks that must line up with it (NIfTI, DICOM SEG).

Conventions (the ones :class:`~medcycle.labels.model.Mask` documents, spelled out):

* a volume's array is ``(slices, rows, cols)``; ``spacing`` is in mm in that same order
  ``(slice spacing, row spacing, column spacing)`` — note PixelSpacing is ``[row, column]`` spacing;
* ``origin`` is the patient (LPS, mm) position ``(x, y, z)`` of the centre of voxel ``[0, 0, 0]``;
* ``direction`` is the 3x3 matrix, flattened row-major, whose columns are the LPS unit vectors along
  the column, row and slice index (SimpleITK's convention): column 0 is the first triplet of
  ImageOrientationPatient (the direction along a row), column 1 the second, column 2 their cross
  product (slices are sorted along it).

So voxel ``[k, j, i]`` lies at ``origin + D @ (i*dx, j*dy, k*dz)``. NIfTI stores RAS: x and y flip sign.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medcycle.errors import ValidationFailed
from medcycle.labels.model import Mask

F64 = npt.NDArray[np.float64]
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True, slots=True)
class SeriesGeometry:
    """A series' grid: ``shape`` (slices, rows, cols), spacing/origin/direction as the module says,
    the SOP instance UID of each slice in slice order, and (when built from them) the slice headers."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    instance_uids: tuple[str, ...] = ()
    series_uid: str | None = None
    datasets: tuple[Dataset, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) <= 0:
            raise ValidationFailed(f"series shape {self.shape} is not (slices, rows, cols)",
                                   hint="Give three positive sizes.")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValidationFailed(f"series spacing {self.spacing} is not three positive numbers",
                                   hint="Give (slice, row, column) spacing in mm.")
        if len(self.origin) != 3 or len(self.direction) != 9:
            raise ValidationFailed("a series origin needs 3 numbers and its direction 9",
                                   hint="Give origin (x, y, z) and a 3x3 direction matrix, row-major.")

    @classmethod
    def from_datasets(cls, datasets: Sequence[Dataset]) -> SeriesGeometry:
        """The grid of a single-frame series from its slices (any order; sorted along the slice normal)."""
        if not datasets:
            raise ValidationFailed("a series needs at least one slice", hint="Pass the series' DICOM files.")
        for ds in datasets:
            if int(ds.get("NumberOfFrames", 1) or 1) > 1:
                raise ValidationFailed("multi-frame source images are not supported as a series grid",
                                       hint="Use a series stored one slice per file.")
        if len(datasets) == 1 and ("ImagePositionPatient" not in datasets[0]
                                   or "ImageOrientationPatient" not in datasets[0]):
            return cls._unplaced(datasets[0])
        for ds in datasets:
            for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
                if keyword not in ds:
                    raise ValidationFailed(f"slice {ds.get('SOPInstanceUID', '?')} has no {keyword}",
                                           hint="Masks are aligned to a series through its plane geometry; "
                                                "this series does not carry it.")
        series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
        if len(series) > 1:
            raise ValidationFailed(f"the slices belong to {len(series)} series",
                                   hint="Pass the files of one series.")
        iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
        for ds in datasets[1:]:
            if not np.allclose([float(v) for v in ds.ImageOrientationPatient], iop, atol=1e-4):
                raise ValidationFailed("the slices have different orientations",
                                       hint="A mask grid needs one orientation for the whole series.")
        row_dir, col_dir = iop[:3], iop[3:]
        normal = np.cross(row_dir, col_dir)
        ordered = sorted(datasets, key=lambda ds: float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)))
        positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in ordered])
        rows, cols = int(ordered[0].Rows), int(ordered[0].Columns)
        if any((int(ds.Rows), int(ds.Columns)) != (rows, cols) for ds in ordered):
            raise ValidationFailed("the slices have different sizes", hint="Pass the files of one series.")
        dy, dx = (float(v) for v in ordered[0].PixelSpacing)
        if len(ordered) > 1:
            steps = np.diff(positions @ normal)
            if steps.min() <= 1e-6:
                raise ValidationFailed("two slices lie at the same position",
                                       hint="Remove duplicate slices from the series.")
            if steps.max() - steps.min() > max(1e-3, 0.01 * steps.mean()):
                raise ValidationFailed(f"the slice spacing varies from {steps.min():.4g} to {steps.max():.4g} mm",
                                       hint="A mask grid needs evenly spaced slices; resample the series first.")
            dz = float(steps.mean())
        else:
            dz = float(ordered[0].get("SpacingBetweenSlices") or ordered[0].get("SliceThickness") or 1.0)
        direction = np.column_stack([row_dir, col_dir, normal])
        return cls(
            shape=(len(ordered), rows, cols),
            spacing=(dz, dy, dx),
            origin=(float(positions[0][0]), float(positions[0][1]), float(positions[0][2])),
            direction=tuple(float(v) for v in direction.ravel()),
            instance_uids=tuple(str(ds.SOPInstanceUID) for ds in ordered),
            series_uid=str(ordered[0].get("SeriesInstanceUID") or "") or None,
            datasets=tuple(ordered),
        )

    @classmethod
    def _unplaced(cls, ds: Dataset) -> SeriesGeometry:
        """A single image without plane geometry (a radiograph): identity direction, origin 0, its pixel spacing."""
        for keyword in ("Rows", "Columns", "SOPInstanceUID"):
            if keyword not in ds:
                raise ValidationFailed(f"the image has no {keyword}", hint="Pass the source image's DICOM file.")
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or [1.0, 1.0]
        return cls(shape=(1, int(ds.Rows), int(ds.Columns)), spacing=(1.0, float(spacing[0]), float(spacing[1])),
                   origin=(0.0, 0.0, 0.0), direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
                   instance_uids=(str(ds.SOPInstanceUID),),
                   series_uid=str(ds.get("SeriesInstanceUID") or "") or None, datasets=(ds,))

    @classmethod
    def from_files(cls, paths: Sequence[str | Path]) -> SeriesGeometry:
        """Read the slice headers (no pixel data) and build the grid."""
        datasets = []
        for path in paths:
            try:
                datasets.append(pydicom.dcmread(path, stop_before_pixels=True))
            except (InvalidDicomError, OSError) as exc:
                raise ValidationFailed(f"{path}: not a readable DICOM file: {exc}",
                                       hint="Pass the DICOM files of the source series.") from exc
        return cls.from_datasets(datasets)

    @classmethod
    def coerce(cls, value: SeriesGeometry | Sequence[Any]) -> SeriesGeometry:
        """A geometry, or one built from datasets or file paths."""
        if isinstance(value, SeriesGeometry):
            return value
        items = list(value)
        if items and all(isinstance(v, Dataset) for v in items):
            return cls.from_datasets(items)
        if items and all(isinstance(v, str | Path) for v in items):
            return cls.from_files(items)
        raise ValidationFailed("a series is a SeriesGeometry, a list of DICOM datasets or a list of file paths",
                               hint="Pass SeriesGeometry.from_files(paths).")

    @classmethod
    def of_mask(cls, mask: Mask) -> SeriesGeometry | None:
        """The grid a 3D mask carries, when it carries spacing, origin and direction."""
        if mask.array.ndim != 3 or mask.spacing is None or mask.origin is None or mask.direction is None:
            return None
        if len(mask.origin) != 3 or len(mask.direction) != 9:
            return None
        shape = tuple(int(n) for n in mask.array.shape)
        return cls((shape[0], shape[1], shape[2]), (mask.spacing[0], mask.spacing[1], mask.spacing[2]),
                   (mask.origin[0], mask.origin[1], mask.origin[2]), tuple(mask.direction))

    @classmethod
    def from_affine_lps(cls, affine: F64, shape: tuple[int, int, int]) -> SeriesGeometry:
        """The grid whose index ``(i=col, j=row, k=slice)`` maps to LPS through ``affine``."""
        m = np.asarray(affine, dtype=np.float64)[:3, :3]
        norms = np.linalg.norm(m, axis=0)
        if np.any(norms <= 0):
            raise ValidationFailed("the affine has a zero-length axis", hint="Fix the image's spatial header.")
        direction = m / norms
        return cls(shape, (float(norms[2]), float(norms[1]), float(norms[0])),
                   (float(affine[0, 3]), float(affine[1, 3]), float(affine[2, 3])),
                   tuple(float(v) for v in direction.ravel()))

    def affine_lps(self) -> F64:
        """4x4 from index ``(i=col, j=row, k=slice, 1)`` to LPS mm."""
        dz, dy, dx = self.spacing
        out = np.eye(4)
        out[:3, :3] = np.asarray(self.direction, dtype=np.float64).reshape(3, 3) @ np.diag([dx, dy, dz])
        out[:3, 3] = self.origin
        return out

    def affine_ras(self) -> F64:
        return LPS_TO_RAS @ self.affine_lps()

    def mask(self, array: npt.ArrayLike) -> Mask:
        """A mask on this grid (array ``(slices, rows, cols)``)."""
        arr = np.asarray(array)
        if arr.shape != self.shape:
            raise ValidationFailed(f"a mask of shape {arr.shape} does not fit the series grid {self.shape}",
                                   hint="Give (slices, rows, cols) of the series.")
        return Mask(arr, spacing=self.spacing, origin=self.origin, direction=self.direction)

    def same_grid(self, other: SeriesGeometry, tol: float = 1e-3) -> bool:
        """Same shape and the same voxel → mm mapping (within ``tol`` mm per voxel corner)."""
        return self.shape == other.shape and bool(np.allclose(self.affine_lps(), other.affine_lps(), atol=tol))

    def place(self, mask: Mask) -> npt.NDArray[np.bool_]:
        """A mask as a boolean volume on this grid: a 3D mask must be on it, a 2D one goes to its slice ``z``."""
        arr = mask.binary
        if arr.ndim == 3:
            own = SeriesGeometry.of_mask(mask)
            if arr.shape != self.shape:
                raise ValidationFailed(f"a mask of shape {arr.shape} is not on the series grid {self.shape}",
                                       hint="Resample the mask onto its series first.")
            if own is not None and not self.same_grid(own):
                raise ValidationFailed("a mask's spacing, origin or direction differ from its series'",
                                       hint="The mask was drawn on another grid; resample it onto the series.")
            return arr
        if arr.shape != self.shape[1:]:
            raise ValidationFailed(f"a 2D mask of shape {arr.shape} does not fit the series' slices {self.shape[1:]}",
                                   hint="Give (rows, cols) of the slice.")
        z = mask.z if mask.z is not None else (0 if self.shape[0] == 1 else None)
        if z is None or not 0 <= z < self.shape[0]:
            raise ValidationFailed(f"a 2D mask on a {self.shape[0]}-slice series needs its slice z in range, "
                                   f"got {mask.z}", hint="Set Mask.z to the slice index.")
        out = np.zeros(self.shape, dtype=bool)
        out[z] = arr
        return out

    def mask_for(self, volume: npt.NDArray[Any], planar: bool) -> Mask:
        """A read-back mask on this grid: 2D ``(rows, cols)`` with in-plane spacing for a 2D image
        (``planar`` and one slice), else 3D with the full geometry."""
        data = np.asarray(volume).astype(np.uint8)
        if planar and self.shape[0] == 1:
            return Mask(data[0], spacing=(self.spacing[1], self.spacing[2]))
        return self.mask(data)
