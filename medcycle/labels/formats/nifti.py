"""NIfTI label maps aligned to their source series: ``<image>.nii.gz`` per image plus ``labels.json``.

A label map holds, per voxel, ``0`` for background or the 1-based index of the class (``labels.json``
names them, as ``{"labels": {"background": 0, "nodule": 1, ...}}``, and records each file's reader).
The affine is the source series' grid (:class:`.geometry.SeriesGeometry`: from ImagePositionPatient,
ImageOrientationPatient, PixelSpacing and the slice step) turned from DICOM's LPS to NIfTI's RAS
(x and y negated); the data array is indexed ``[column, row, slice]`` as DICOM-to-NIfTI converters do.

On import the file's grid is mapped onto the series grid given with ``series=``: any axis order,
flips or offset (what ITK-SNAP, 3D Slicer or dcm2niix may write) is undone exactly; a rotated or
resampled grid is refused unless ``resample=True`` (nearest neighbour). Without ``series`` the mask
keeps the file's own grid (converted to LPS).

Export needs each image's grid: ``series={key: SeriesGeometry | DICOM datasets | file paths}``, or
masks that carry spacing, origin and direction. One label map holds one mask per class and one reader
per image; overlapping masks of different classes are refused. Not kept: scores, attributes.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from medcycle.labels.formats.bundle import MAX_FILE_BYTES, Bundle, safe_relative, unique
from medcycle.labels.formats.geometry import LPS_TO_RAS, SeriesGeometry
from medcycle.labels.formats.images import Collector, ImageIndex, by_image, check_writable, export_name, stem
from medcycle.labels.formats.parsing import Where, dump_json, load_json
from medcycle.labels.model import Annotation, AnnotationSet, Kind, Mask

LABELS = "labels.json"
SUFFIXES = (".nii.gz", ".nii")
Series = Mapping[str, SeriesGeometry | Sequence[Any]]
_NIB_ERRORS = (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, ValueError, EOFError,
               OSError, TypeError)


def _gunzip(data: bytes, where: Where) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        raw = inflater.decompress(data, MAX_FILE_BYTES)
    except zlib.error as exc:
        where.fail(f"is not valid gzip: {exc}", "Write the mask again as .nii.gz.")
    if inflater.unconsumed_tail:
        where.fail(f"inflates to more than {MAX_FILE_BYTES} bytes", "Split or crop the mask.")
    return raw


def load(data: bytes, file: str) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """The voxel array ``[i, j, k]`` (integers) and its RAS affine."""
    where = Where(file)
    raw = _gunzip(data, where) if data[:2] == b"\x1f\x8b" else data
    try:
        image: Any = (nib.Nifti2Image if raw[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")
                      else nib.Nifti1Image).from_bytes(raw)
        values = np.asanyarray(image.dataobj)
    except _NIB_ERRORS as exc:
        where.fail(f"is not a readable NIfTI image: {exc}", "Write the mask again as NIfTI-1 (.nii.gz).")
    if values.ndim == 4 and values.shape[3] == 1:
        values = values[..., 0]
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3:
        where.fail(f"holds a {values.ndim}D image {values.shape}; a label map is 3D",
                   "Write one 3D label map per image.")
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            where.fail("holds values that are not whole numbers; a label map holds class indices",
                       "Threshold probabilities and write integer labels.")
    elif values.dtype.kind not in "biu":
        where.fail(f"holds {values.dtype} values; a label map holds class indices", "Write integer labels.")
    if values.size and values.min() < 0:
        where.fail("holds negative values; a label map holds class indices from 0", "Write 0 for background.")
    return values.astype(np.int64), np.asarray(image.affine, dtype=np.float64)


def _onto(data: npt.NDArray[Any], affine_lps: npt.NDArray[np.float64], target: SeriesGeometry, resample: bool,
          where: Where) -> npt.NDArray[Any]:
    """The label map ``[i, j, k]`` of the file placed on the target grid; returns ``[k, j, i]``."""
    nk, nj, ni = target.shape
    transform = np.linalg.inv(target.affine_lps()) @ affine_lps  # file index -> target index
    rot, shift = transform[:3, :3], transform[:3, 3]
    perm_matrix = np.round(rot)
    is_perm = (np.allclose(rot, perm_matrix, atol=1e-3) and np.all(np.abs(perm_matrix).sum(axis=0) == 1)
               and np.all(np.abs(perm_matrix).sum(axis=1) == 1) and np.allclose(shift, np.round(shift), atol=1e-3))
    out = np.zeros((ni, nj, nk), dtype=np.int64)
    if is_perm:
        perm = [int(np.flatnonzero(perm_matrix[a])[0]) for a in range(3)]
        arr = data.transpose(perm)
        offsets = []
        for a in range(3):
            if perm_matrix[a, perm[a]] < 0:
                arr = np.flip(arr, axis=a)
                offsets.append(round(shift[a]) - (arr.shape[a] - 1))
            else:
                offsets.append(round(shift[a]))
        dst = tuple(slice(max(o, 0), min(o + n, size))
                    for o, n, size in zip(offsets, arr.shape, out.shape, strict=True))
        src = tuple(slice(d.start - o, d.stop - o) for d, o in zip(dst, offsets, strict=True))
        if all(d.stop > d.start for d in dst):
            out[dst] = arr[src]
        if np.count_nonzero(out) != np.count_nonzero(data):
            where.fail("has labelled voxels outside the series grid",
                       "The mask does not belong to this series, or was cropped/shifted; check the series given.")
        return out.transpose(2, 1, 0)
    if not resample:
        where.fail("is not on the series grid (rotated, resampled or of another spacing)",
                   "Pass resample=True to resample it (nearest neighbour), or export it on the series grid.")
    back = np.linalg.inv(transform)
    jj, ii = np.meshgrid(np.arange(nj), np.arange(ni))
    for k in range(nk):
        idx = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k), np.ones(ii.size)])
        src_idx = np.rint(back @ idx)[:3].astype(np.int64)
        inside = np.all((src_idx >= 0) & (src_idx < np.array(data.shape)[:, None]), axis=0)
        plane = np.zeros(ii.size, dtype=np.int64)
        plane[inside] = data[src_idx[0, inside], src_idx[1, inside], src_idx[2, inside]]
        out[:, :, k] = plane.reshape(ni, nj)
    return out.transpose(2, 1, 0)


def _names(bundle: Bundle, classes: Sequence[str] | None) -> tuple[dict[int, str], dict[str, str]]:
    if classes is not None:
        return {i + 1: c for i, c in enumerate(classes)}, {}
    found = bundle.named(LABELS)
    if not found:
        return {}, {}
    doc = load_json(bundle.read(found[0]), found[0])
    names: dict[int, str] = {}
    for name in doc.key("labels").mapping():
        node = doc.key("labels").key(name)
        if node.integer() != 0:
            names[node.integer()] = name
    readers = doc.opt("readers")
    return names, {k: str(v) for k, v in (readers.mapping() if readers is not None else {}).items()}


def read(bundle: Bundle, *, images: ImageIndex, series: Series | None = None, classes: Sequence[str] | None = None,
         resample: bool = False) -> AnnotationSet:
    names, readers = _names(bundle, classes)
    grids = {k: SeriesGeometry.coerce(v) for k, v in (series or {}).items()}
    files = bundle.with_suffix(*SUFFIXES)
    if not files:
        Where(bundle.label).fail("holds no NIfTI (.nii.gz) files", "Point at the folder of label maps.")
    found = Collector()
    for file in files:
        where = Where(file)
        data, affine_ras = load(bundle.read(file), file)
        affine_lps = LPS_TO_RAS @ affine_ras
        image = file[: -len(next(s for s in SUFFIXES if file.lower().endswith(s)))]
        ref = images.find(image) if images.given else None
        target = grids.get(ref.key if ref is not None else image)
        if target is not None:
            volume = _onto(data, affine_lps, target, resample, where)
            grid = target
        else:
            volume = data.transpose(2, 1, 0)
            grid = SeriesGeometry.from_affine_lps(affine_lps, (volume.shape[0], volume.shape[1], volume.shape[2]))
        ref = images.resolve(image, grid.shape[2], grid.shape[1], where, depth=grid.shape[0])
        planar = ref.depth is None
        if not planar and ref.depth != grid.shape[0]:
            where.fail(f"has {grid.shape[0]} slices, image {ref.key!r} has {ref.depth}",
                       "The mask belongs to another series; check the file name and series.")
        found.image(ref, where)
        for value in np.unique(volume[volume > 0]).tolist():
            label = names.get(int(value), str(value))
            mask = grid.mask_for(volume == value, planar)
            with where.guard():
                found.add(Annotation(ref.key, label, Kind.MASK, mask, reader=readers.get(file)))
    ordered = [names[v] for v in sorted(names)]
    return found.build(ordered)


def _grid(key: str, masks: list[Mask], series: Series | None) -> SeriesGeometry:
    if series is not None and key in series:
        return SeriesGeometry.coerce(series[key])
    for m in masks:
        own = SeriesGeometry.of_mask(m)
        if own is not None:
            return own
    raise Where(key).error("has no series grid for its label map",
                           "Pass series={key: SeriesGeometry.from_files(paths)}, or masks with spacing, origin "
                           "and direction.")


def write(aset: AnnotationSet, *, series: Series | None = None) -> dict[str, bytes]:
    """``<image>.nii.gz`` per image with masks (or with a series given), and ``labels.json``."""
    check_writable(aset, "NIfTI", {Kind.MASK}, planar=False)
    refs = {r.key: r for r in aset.images}
    values = {c: i + 1 for i, c in enumerate(aset.classes)}
    dtype = np.uint8 if len(aset.classes) < 256 else np.uint16
    names = {k: safe_relative(stem(export_name(r)) + ".nii.gz", f"image {k!r}") for k, r in refs.items()}
    unique(names.values(), "NIfTI file")
    files: dict[str, bytes] = {}
    readers: dict[str, str] = {}
    for key, group in by_image(aset).items():
        if not group and (series is None or key not in series):
            continue
        masks = [a.geometry for a in group if isinstance(a.geometry, Mask)]
        grid = _grid(key, masks, series)
        who = {a.reader for a in group}
        if len(who) > 1:
            raise Where(key).error(f"has masks by {len(who)} readers; a label map holds one reader's",
                                   "Export each reader's masks separately.")
        labels = [a.label for a in group]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise Where(key).error(f"has several masks labelled {twice[0]!r}; a label map holds one per class",
                                   "Merge them first, or use DICOM SEG (a segment per mask).")
        labelmap = np.zeros(grid.shape, dtype=dtype)
        for a in group:
            assert isinstance(a.geometry, Mask)
            with Where(key, f"mask {a.label!r}").guard():
                voxels = grid.place(a.geometry)
            if np.any(labelmap[voxels] != 0):
                raise Where(key).error(f"has mask {a.label!r} overlapping another class",
                                       "A label map holds one class per voxel; use DICOM SEG for overlaps.")
            labelmap[voxels] = values[a.label]
        nifti_image: Any = nib.Nifti1Image  # nibabel is untyped
        image = nifti_image(labelmap.transpose(2, 1, 0), grid.affine_ras())
        image.set_qform(grid.affine_ras(), code=1)
        image.set_sform(grid.affine_ras(), code=1)
        image.header.set_xyzt_units("mm")
        name = names[key]
        files[name] = gzip.compress(image.to_bytes(), mtime=0)
        reader = next(iter(who)) if who else None
        if reader is not None:
            readers[name] = reader
    doc: dict[str, Any] = {"labels": {"background": 0, **values}}
    if readers:
        doc["readers"] = readers
    files[LABELS] = dump_json(doc, LABELS)
    return files
