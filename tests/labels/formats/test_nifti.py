"""NIfTI label maps on a synthetic CT series: a known voxel lands on the right slice/row/column (checked
against nibabel's affine and SimpleITK's own DICOM and NIfTI readers), reoriented files map back exactly."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medcycle.errors import ValidationFailed
from medcycle.labels import formats
from medcycle.labels.formats import SeriesGeometry
from medcycle.labels.model import Annotation, AnnotationSet, ImageRef, Kind, Mask
from medcycle.testing.dicom import write_ct_series

from .helpers import assert_same

VOXEL = (5, 10, 40)  # slice, row, column


@pytest.fixture(scope="module")
def oblique(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The synthetic CT, moved and tilted: origin off zero, a rotated in-plane orientation, slices
    stored in shuffled file order, so sorting and LPS→RAS signs are exercised."""
    folder = tmp_path_factory.mktemp("ct")
    paths = write_ct_series(folder, slices=8, size=64)
    c, s = np.cos(0.3), np.sin(0.3)
    row, col = np.array([c, s, 0.0]), np.array([-s, c, 0.0])
    normal = np.cross(row, col)
    for i, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [*row.round(6), *col.round(6)]
        ds.ImagePositionPatient = list((np.array([-120.5, 33.0, 410.0]) + normal * 1.25 * i).round(6))
        ds.save_as(folder / f"x_{(i * 5) % 8}.dcm", enforce_file_format=True)
        path.unlink()
    return sorted(folder.glob("x_*.dcm"))


def _one_voxel_set(grid: SeriesGeometry, key: str) -> AnnotationSet:
    ref = ImageRef(key, grid.shape[2], grid.shape[1], depth=grid.shape[0], file_name="ct1")
    lesion = np.zeros(grid.shape, dtype=np.uint8)
    lesion[VOXEL] = 1
    organ = np.zeros(grid.shape, dtype=np.uint8)
    organ[2:4, 20:30, 5:15] = 1
    return AnnotationSet((ref,), ("organ", "lesion"), (
        Annotation(key, "lesion", Kind.MASK, grid.mask(lesion), reader="alice"),
        Annotation(key, "organ", Kind.MASK, grid.mask(organ), reader="alice"),
    ))


def test_known_voxel_lands_on_its_dicom_position(oblique: list[Path], tmp_path: Path) -> None:
    grid = SeriesGeometry.from_files(oblique)
    aset = _one_voxel_set(grid, "1.2.3")
    formats.write(aset, "nifti", tmp_path / "out", series={"1.2.3": grid})
    image = nib.load(tmp_path / "out/ct1.nii.gz")
    data = np.asarray(image.dataobj)
    k, j, i = VOXEL
    assert data.shape == (64, 64, 8) and data[i, j, k] == 2  # [column, row, slice]; lesion is class 2
    # where DICOM puts that voxel: IPP of the k-th slice along the normal + row/col steps, in LPS
    slices = sorted((pydicom.dcmread(p) for p in oblique), key=lambda d: float(np.dot(
        d.ImagePositionPatient, np.cross(d.ImageOrientationPatient[:3], d.ImageOrientationPatient[3:]))))
    ds = slices[k]
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    lps = (np.array(ds.ImagePositionPatient, dtype=float) + iop[:3] * float(ds.PixelSpacing[1]) * i
           + iop[3:] * float(ds.PixelSpacing[0]) * j)
    ras = image.affine @ [i, j, k, 1]
    assert np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-4)
    # and SimpleITK agrees: the same index is the same physical point in the series and in the label map
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(oblique[0].parent)))  # sorted in space
    ct = reader.Execute()
    ct_point = ct.TransformIndexToPhysicalPoint((i, j, k))
    labelmap = sitk.ReadImage(str(tmp_path / "out/ct1.nii.gz"))
    assert np.allclose(labelmap.TransformIndexToPhysicalPoint((i, j, k)), ct_point, atol=1e-3)
    assert sitk.GetArrayFromImage(labelmap)[k, j, i] == 2
    assert np.allclose(ct_point, lps, atol=1e-3)


def test_round_trip_is_exact_on_the_series_grid(oblique: list[Path], tmp_path: Path) -> None:
    grid = SeriesGeometry.from_files(oblique)
    aset = _one_voxel_set(grid, "1.2.3")
    formats.write(aset, "nifti", tmp_path / "out", series={"1.2.3": oblique})
    assert json.loads((tmp_path / "out/labels.json").read_text())["labels"] == {
        "background": 0, "organ": 1, "lesion": 2}
    back = formats.read(tmp_path / "out", "nifti", images=aset.images, series={"1.2.3": grid})
    assert_same(aset, back)
    # the masks' own geometry is enough to write them (no series given)
    again = formats.encode(aset, "nifti")
    assert_same(aset, formats.read(_zip(again), "nifti", images=aset.images, series={"1.2.3": grid}))


def _zip(files: dict[str, bytes]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("codes", [("R", "A", "S"), ("S", "R", "A"), ("P", "I", "L")])
def test_reoriented_files_map_back_exactly(oblique: list[Path], tmp_path: Path, codes: tuple[str, ...]) -> None:
    grid = SeriesGeometry.from_files(oblique)
    aset = _one_voxel_set(grid, "1.2.3")
    files = formats.encode(aset, "nifti", series={"1.2.3": grid})
    image = nib.Nifti1Image.from_bytes(gzip.decompress(files["ct1.nii.gz"]))
    turn = nib.orientations.ornt_transform(nib.io_orientation(image.affine), nib.orientations.axcodes2ornt(codes))
    moved = image.as_reoriented(turn)
    assert nib.aff2axcodes(moved.affine) == codes
    files["ct1.nii.gz"] = gzip.compress(moved.to_bytes())
    back = formats.read(_zip(files), "nifti", images=aset.images, series={"1.2.3": grid})
    assert_same(aset, back)


def test_resampled_grid_needs_resample_true(oblique: list[Path]) -> None:
    grid = SeriesGeometry.from_files(oblique)
    coarse = np.zeros((32, 32, 8), dtype=np.uint8)
    coarse[20, 5, 3] = 1  # [i, j, k] on a grid of twice the in-plane spacing
    affine = grid.affine_ras() @ np.diag([2.0, 2.0, 1.0, 1.0])
    data = gzip.compress(nib.Nifti1Image(coarse, affine).to_bytes())
    with pytest.raises(ValidationFailed, match=r"ct1.nii.gz: is not on the series grid"):
        formats.read(data, "nifti", name="ct1.nii.gz", series={"ct1": grid})
    aset = formats.read(data, "nifti", name="ct1.nii.gz", series={"ct1": grid}, resample=True, classes=["x"])
    geom = aset.annotations[0].geometry
    assert isinstance(geom, Mask) and geom.array[3, 10, 40] == 1 and geom.array.sum() >= 1
    assert not geom.array[:, :, :30].any() and not geom.array[:2].any()


def test_without_series_the_file_keeps_its_own_grid(oblique: list[Path]) -> None:
    grid = SeriesGeometry.from_files(oblique)
    files = formats.encode(_one_voxel_set(grid, "1.2.3"), "nifti")
    aset = formats.read(_zip(files), "nifti")
    assert aset.images == (ImageRef("ct1", 64, 64, depth=8, file_name="ct1"),)
    lesion = next(a for a in aset.annotations if a.label == "lesion")
    assert isinstance(lesion.geometry, Mask) and lesion.geometry.array[VOXEL] == 1 and lesion.reader == "alice"
    assert np.allclose(lesion.geometry.origin, grid.origin, atol=1e-3)  # type: ignore[arg-type]
    assert np.allclose(lesion.geometry.direction, grid.direction, atol=1e-5)  # type: ignore[arg-type]
    assert np.allclose(lesion.geometry.spacing, grid.spacing, atol=1e-5)  # type: ignore[arg-type]


def test_slice_masks_go_to_their_slice(oblique: list[Path]) -> None:
    grid = SeriesGeometry.from_files(oblique)
    ref = ImageRef("s", 64, 64, depth=8)
    plane = np.zeros((64, 64), dtype=np.uint8)
    plane[1, 2] = 1
    aset = AnnotationSet((ref,), ("x",), (Annotation("s", "x", Kind.MASK, Mask(plane, z=6)),))
    back = formats.read(_zip(formats.encode(aset, "nifti", series={"s": grid})), "nifti", images=[ref],
                        series={"s": grid})
    geom = back.annotations[0].geometry
    assert isinstance(geom, Mask) and geom.array.shape == (8, 64, 64)
    assert np.argwhere(geom.array).tolist() == [[6, 1, 2]]


def test_export_refusals(oblique: list[Path]) -> None:
    grid = SeriesGeometry.from_files(oblique)
    ref = ImageRef("s", 64, 64, depth=8)
    m = np.zeros(grid.shape, np.uint8)
    m[0, 0, 0] = 1
    overlap = AnnotationSet((ref,), ("a", "b"), (Annotation("s", "a", Kind.MASK, grid.mask(m)),
                                                 Annotation("s", "b", Kind.MASK, grid.mask(m))))
    with pytest.raises(ValidationFailed, match="has mask 'b' overlapping another class"):
        formats.encode(overlap, "nifti")
    two = AnnotationSet((ref,), ("a",), (Annotation("s", "a", Kind.MASK, grid.mask(m), reader="r1"),
                                         Annotation("s", "a", Kind.MASK, grid.mask(m), reader="r2")))
    with pytest.raises(ValidationFailed, match="has masks by 2 readers"):
        formats.encode(two, "nifti")
    bare = AnnotationSet((ref,), ("a",), (Annotation("s", "a", Kind.MASK, Mask(m)),))
    with pytest.raises(ValidationFailed, match="s: has no series grid for its label map"):
        formats.encode(bare, "nifti")
    with pytest.raises(ValidationFailed, match="is not on the series grid \\(8, 64, 64\\)"):
        formats.encode(AnnotationSet((ref,), ("a",), (Annotation("s", "a", Kind.MASK, Mask(m[:4])),)), "nifti",
                       series={"s": grid})


def test_malformed_files(oblique: list[Path]) -> None:
    grid = SeriesGeometry.from_files(oblique)
    eye = np.eye(4)
    cases = [
        (gzip.compress(nib.Nifti1Image(np.full((4, 4, 2), 0.5, np.float32), eye).to_bytes()), "not whole numbers"),
        (gzip.compress(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.uint8), eye).to_bytes()), "holds a 4D image"),
        (gzip.compress(nib.Nifti1Image(np.full((2, 2, 2), -1, np.int16), eye).to_bytes()), "holds negative values"),
        (b"\x1f\x8b" + b"garbage", "is not valid gzip"),
        (gzip.compress(b"not a nifti header" * 30), "is not a readable NIfTI image"),
    ]
    for data, message in cases:
        with pytest.raises(ValidationFailed, match=f"m.nii.gz: .*{message}"):
            formats.read(data, "nifti", name="m.nii.gz")
    far = np.zeros((64, 64, 8), np.uint8)
    far[0, 0, 0] = 1
    shifted = grid.affine_ras() @ np.array([[1, 0, 0, 100], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    data = gzip.compress(nib.Nifti1Image(far, shifted).to_bytes())
    with pytest.raises(ValidationFailed, match=r"ct1.nii.gz: has labelled voxels outside the series grid"):
        formats.read(data, "nifti", name="ct1.nii.gz", series={"ct1": grid})
