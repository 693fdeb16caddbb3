"""Worker side of intake: a job's stored objects back into arrays, read exactly as training reads files.

Each case's objects are fetched (DICOM into memory, NIfTI and PNG into a scratch folder) and read with the
training readers (:mod:`medcycle.training.data`): DICOM with its modality LUT and MONOCHROME1 inverted, a
series stacked in slice order; NIfTI with axes reversed to ``(k, j, i)``; PNG as grayscale. What outputs
need comes along: the DICOM headers in slice order (DICOM SEG and secondary captures reference them), the
series grid (NIfTI masks on the input's geometry), and the spacing in mm for areas and volumes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from medcycle.errors import ValidationFailed
from medcycle.serving.inputs import DICOM, NIFTI, SUFFIX

if TYPE_CHECKING:
    from medcycle.labels.formats.geometry import SeriesGeometry
    from medcycle.objects.base import ObjectStore
    from medcycle.serving.predictor import CaseInput
    from medcycle.serving.schemas import Params

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


@dataclass
class DecodedCase:
    """One case of a job, decoded.

    Attributes:
        pixels: ``(rows, cols)`` or ``(slices, rows, cols)``, float32 in scanner units as training reads them.
        header: the first slice's DICOM header (the OOD gate's header rules); None for NIfTI/PNG.
        datasets: DICOM headers (no pixel data) in slice order, for outputs that reference the source.
        grid: the series grid (DICOM), or None.
        affine: 4x4 voxel → RAS (mm) for NIfTI outputs: the input's own (NIfTI), the grid's (DICOM), or None.
        spacing: ``(slice, row, column)`` mm, or None when unknown (PNG).
        grid_problem: why a DICOM case has no series grid (uneven or duplicate slices, multi-frame, no
            geometry), or None: named with the outputs that need the grid (SEG) or fall back without it (NIfTI).
    """

    index: int
    kind: str
    digests: list[str]
    pixels: F32
    header: Any = None
    datasets: list[Any] = field(default_factory=list)
    grid: SeriesGeometry | None = None
    affine: F64 | None = None
    spacing: tuple[float, float, float] | None = None
    grid_problem: str | None = None

    @property
    def images(self) -> int:
        return 1 if self.pixels.ndim == 2 else int(self.pixels.shape[0])

    def model_input(self, params: Params | None = None) -> CaseInput:
        """What a predictor takes of this case (pixels, header, spacing, why the series has no grid)."""
        from medcycle.serving.predictor import CaseInput
        from medcycle.serving.schemas import Params

        return CaseInput(self.pixels, self.header, self.spacing, params if params is not None else Params(),
                         grid_problem=self.grid_problem)


def _fetch(objects: ObjectStore, digest: str, folder: Path, name: str, fmt: str) -> Path:
    path = folder / name
    objects.get_to_path(digest, path)
    if fmt == NIFTI:
        with path.open("rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        target = path.with_name(path.name + (".nii.gz" if gz else ".nii"))
        path.rename(target)
        return target
    target = path.with_name(path.name + SUFFIX[fmt])
    path.rename(target)
    return target


def decode_case(objects: ObjectStore, payload: dict[str, Any], index: int, folder: Path, tag: str = "") -> DecodedCase:
    """Case ``index`` of a job's ``payload``, fetched into ``folder`` (as files named ``TAG…``) and read.

    Raises:
        ValidationFailed: the stored input cannot be read as an image (the message says why).
    """
    from medcycle.training.data import read_file

    spec = payload["cases"][index]
    digests = [payload["inputs"][i] for i in spec["inputs"]]
    fmt = str(spec["kind"])
    paths: list[Path] = []
    if fmt != DICOM:  # DICOM is read from memory; the NIfTI and PNG readers take files
        folder.mkdir(parents=True, exist_ok=True)
        paths = [_fetch(objects, d, folder, f"{tag}c{index}-{k:05d}", fmt) for k, d in enumerate(digests)]
    # DICOM: each stored file read (verified) into memory and parsed, one at a time; a store that fails raises its
    # own error here, not the input's
    datasets: list[Any] = [_parse_dicom(objects.get(d), index) for d in digests] if fmt == DICOM else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # decoder warnings may quote header values
        try:
            if fmt == DICOM:
                datasets, pixels = _read_series(datasets)
            else:
                pixels = read_file(paths[0])
        except ValidationFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - decoders raise many kinds; the text may quote header values
            raise ValidationFailed(f"case {index + 1} ({fmt}) cannot be decoded ({type(exc).__name__})",
                                   hint="Send the images again; check they open in a viewer.") from None
    if pixels.ndim == 3 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim not in (2, 3) or min(pixels.shape) < 2:
        raise ValidationFailed(f"case {index + 1} has an image of shape {pixels.shape}",
                               hint="Send 2D images or 3D volumes of at least 2 pixels per side.")
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        # NaN made the intensity scaling, and so the image or the network's output, NaN: a NaN probability was
        # stored as a negative finding (and a NaN in a result is refused by PostgreSQL's JSON: a retry loop)
        bad = int(pixels.size - np.count_nonzero(np.isfinite(pixels)))
        raise ValidationFailed(f"case {index + 1} ({fmt}) has {bad} pixels that are not finite numbers (NaN or "
                               "infinite)", hint="Replace them (e.g. with the background value) and send the image "
                                                 "again.")
    case = DecodedCase(index, fmt, [str(d) for d in digests], np.ascontiguousarray(pixels, dtype=np.float32))
    if fmt == DICOM:
        _dicom_context(case, datasets)
    elif fmt == NIFTI:
        _nifti_context(case, paths[0])
    return case


def _parse_dicom(data: bytes, index: int) -> Any:
    """A stored DICOM file's dataset, parsed from its bytes as ``dcmread`` parses the file."""
    import io

    import pydicom

    from medcycle.catalog.deid import quiet_pydicom

    with quiet_pydicom(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # decoder warnings may quote header values
        try:
            return pydicom.dcmread(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - the text may quote header values
            raise ValidationFailed(f"case {index + 1} (dicom) cannot be decoded ({type(exc).__name__})",
                                   hint="Send the images again; check they open in a viewer.") from None


def _read_series(datasets: list[Any]) -> tuple[list[Any], F32]:
    """The datasets of a series in slice order (their pixel data dropped once decoded) and the pixels, as
    training reads them: one image or the slices stacked."""
    from medcycle.training.data import dicom_pixels, slice_key

    if len(datasets) > 1:
        datasets = [ds for _, _, ds in sorted(((*slice_key(ds), k), k, ds) for k, ds in enumerate(datasets))]
    planes = [dicom_pixels(ds) for ds in datasets]
    for ds in datasets:
        for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009):  # (float / double) pixel data: headers are kept
            if tag in ds:
                del ds[tag]
    if len(planes) == 1:
        return datasets, planes[0]
    if any(p.ndim != 2 for p in planes):  # intake makes each multi-frame instance a case of its own
        raise ValidationFailed(f"a case stacks {len(planes)} instances of which some are multi-frame",
                               hint="Send each multi-frame instance as a series of its own.")
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise ValidationFailed(f"the slices of the series differ in shape ({sorted(shapes)})",
                               hint="Every slice of a series must be 2D with the same rows and columns.")
    return datasets, np.stack(planes)


def _dicom_context(case: DecodedCase, datasets: list[Any]) -> None:
    from medcycle.labels.formats.geometry import SeriesGeometry

    case.datasets = datasets
    case.header = case.datasets[0]
    try:
        grid = SeriesGeometry.from_datasets(case.datasets)
    except ValidationFailed as exc:  # multi-frame, uneven spacing, missing geometry: no grid, no SEG
        grid, case.grid_problem = None, exc.message
    if grid is not None and grid.shape == ((1, *case.pixels.shape) if case.pixels.ndim == 2 else case.pixels.shape):
        case.grid = grid
        case.affine = grid.affine_ras()
        case.spacing = grid.spacing
        return
    if grid is not None:
        case.grid_problem = f"the series grid {grid.shape} does not fit the image {case.pixels.shape}"
    ds = case.header
    case.spacing = _header_spacing(ds)


def _positive(value: Any) -> float | None:
    """``value`` as a finite, positive number of mm, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _header_spacing(ds: Any) -> tuple[float, float, float] | None:
    """``(slice, row, column)`` mm from PixelSpacing (or ImagerPixelSpacing) and the slice spacing or thickness;
    None (unknown) where the in-plane spacing is missing, zero, negative or not a number — as some CR devices
    write ``0\\0``. An unusable slice spacing is 1 mm."""
    try:
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        pair = [_positive(v) for v in spacing] if spacing is not None and len(spacing) == 2 else []
    except (TypeError, ValueError):
        return None
    if len(pair) != 2 or pair[0] is None or pair[1] is None:
        return None
    thickness = _positive(ds.get("SpacingBetweenSlices")) or _positive(ds.get("SliceThickness")) or 1.0
    return (thickness, pair[0], pair[1])


def _nifti_context(case: DecodedCase, path: Path) -> None:
    import nibabel as nib

    img: Any = nib.load(str(path))
    case.affine = np.asarray(img.affine, dtype=np.float64)
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    while len(zooms) < 3:
        zooms.append(1.0)
    case.spacing = (zooms[2], zooms[1], zooms[0])  # arrays are (k, j, i)
