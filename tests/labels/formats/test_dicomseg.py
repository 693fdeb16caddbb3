"""DICOM SEG through highdicom: binary and multi-segment SEGs on a synthetic CT, exact round trips,
frames referencing the right source slices, a radiograph, and files that are not SEGs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medcycle.errors import UsageError, ValidationFailed
from medcycle.labels import formats
from medcycle.labels.formats import SeriesGeometry
from medcycle.labels.formats.dicomseg import referenced_series
from medcycle.labels.model import Annotation, AnnotationSet, ImageRef, Kind, Mask
from medcycle.testing.dicom import write_ct_series, write_radiograph

from .helpers import assert_same


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_ct_series(tmp_path_factory.mktemp("ct"), slices=6, size=32)


def _set(grid: SeriesGeometry, key: str) -> AnnotationSet:
    ref = ImageRef(key, 32, 32, depth=6, file_name="chest-ct")
    nodule = np.zeros(grid.shape, np.uint8)
    nodule[4, 7, 20] = 1
    lung = np.zeros(grid.shape, np.uint8)
    lung[1:5, 5:25, 3:15] = 1
    lung[4, 7, 20] = 1  # segments may overlap
    empty = np.zeros(grid.shape, np.uint8)
    return AnnotationSet((ref,), ("lung", "nodule"), (
        Annotation(key, "nodule", Kind.MASK, grid.mask(nodule), reader="alice@example.org"),
        Annotation(key, "lung", Kind.MASK, grid.mask(lung), reader="alice@example.org"),
        Annotation(key, "nodule", Kind.MASK, grid.mask(empty), reader="alice@example.org"),
        Annotation(key, "nodule", Kind.MASK, grid.mask(nodule), reader="model:unet-v2"),
    ))


def test_multi_segment_round_trip_is_exact(ct: list[Path], tmp_path: Path) -> None:
    grid = SeriesGeometry.from_files(ct)
    key = grid.series_uid
    assert key is not None
    aset = _set(grid, key)
    written = formats.write(aset, "dicom-seg", tmp_path / "seg", series={key: ct})
    assert sorted(p.name for p in written) == ["chest-ct.1.seg.dcm", "chest-ct.2.seg.dcm"]
    human = pydicom.dcmread(tmp_path / "seg/chest-ct.1.seg.dcm")
    assert human.Modality == "SEG" and human.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in human.SegmentSequence] == ["nodule", "lung", "nodule"]
    assert str(human.ContentCreatorName) == "alice@example.org^"
    model = pydicom.dcmread(tmp_path / "seg/chest-ct.2.seg.dcm")
    assert model.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert formats.detect(tmp_path / "seg") == "dicom-seg"
    back = formats.read(tmp_path / "seg", "dicom-seg", images=aset.images, series={key: grid},
                        classes=["lung", "nodule"])
    assert_same(aset, back)
    # without images= the key is the series' and the image takes the series' size
    plain = formats.read(tmp_path / "seg", "dicom-seg", series={key: ct})
    assert plain.images == (ImageRef(key, 32, 32, depth=6, file_name=key),)


def test_frames_reference_the_source_slice_of_the_voxel(ct: list[Path], tmp_path: Path) -> None:
    grid = SeriesGeometry.from_files(ct)
    key = grid.series_uid or ""
    ref = ImageRef(key, 32, 32, depth=6)
    one = np.zeros(grid.shape, np.uint8)
    one[4, 7, 20] = 1
    aset = AnnotationSet((ref,), ("nodule",), (Annotation(key, "nodule", Kind.MASK, grid.mask(one)),))
    data = formats.encode(aset, "dicom-seg", series={key: ct})[f"{key}.seg.dcm"]
    seg = pydicom.dcmread(io.BytesIO(data))
    assert referenced_series(data) == [key]
    assert int(seg.NumberOfFrames) == 1  # empty frames are omitted
    frame = seg.PerFrameFunctionalGroupsSequence[0]
    source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
    by_position = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in ct),
                         key=lambda d: float(d.ImagePositionPatient[2]))
    assert source == by_position[4].SOPInstanceUID
    assert np.argwhere(seg.pixel_array).tolist() == [[7, 20]]


def test_radiograph_mask_round_trip(tmp_path: Path) -> None:
    path = write_radiograph(tmp_path / "dx.dcm", size=48)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    key = ds.SeriesInstanceUID
    mask = np.zeros((48, 48), np.uint8)
    mask[10:20, 5:30] = 1
    aset = AnnotationSet((ImageRef(key, 48, 48, file_name="dx.png"),), ("lung",),
                         (Annotation(key, "lung", Kind.MASK, Mask(mask, spacing=(0.15, 0.15))),))
    files = formats.encode(aset, "dicom-seg", series={key: [path]})
    assert list(files) == ["dx.seg.dcm"]
    back = formats.read(files["dx.seg.dcm"], "dicom-seg", images=aset.images, series={key: [ds]})
    assert_same(aset, back)


def test_refusals(ct: list[Path], tmp_path: Path) -> None:
    grid = SeriesGeometry.from_files(ct)
    key = grid.series_uid or ""
    aset = _set(grid, key)
    with pytest.raises(UsageError, match="format 'dicom-seg' needs the option 'series'"):
        formats.encode(aset, "dicom-seg")
    bare = SeriesGeometry(grid.shape, grid.spacing, grid.origin, grid.direction)
    with pytest.raises(ValidationFailed, match="has a series grid but no DICOM headers"):
        formats.encode(aset, "dicom-seg", series={key: bare})
    bad_reader = AnnotationSet(aset.images, aset.classes, (Annotation(key, "lung", Kind.MASK, aset.annotations[1]
                                                                      .geometry, reader="Smith^John"),))
    with pytest.raises(ValidationFailed, match="reader 'Smith\\^John' does not fit DICOM"):
        formats.encode(bad_reader, "dicom-seg", series={key: grid})
    data = formats.encode(aset, "dicom-seg", series={key: grid})["chest-ct.1.seg.dcm"]
    with pytest.raises(ValidationFailed, match=r"seg.dcm: segments series .* which is not among the series given"):
        formats.read(data, "dicom-seg", name="seg.dcm", series={"other": grid.__class__(
            grid.shape, grid.spacing, grid.origin, grid.direction, grid.instance_uids, "9.9.9")})
    with pytest.raises(ValidationFailed, match=r"x.dcm: is not a readable DICOM SEG"):
        formats.read(ct[0].read_bytes(), "dicom-seg", name="x.dcm", series={key: grid})
    with pytest.raises(ValidationFailed, match=r"y.dcm: is not a readable DICOM SEG"):
        formats.read(b"\x00" * 128 + b"DICM" + b"\x00" * 20, "dicom-seg", name="y.dcm", series={key: grid})
    other = SeriesGeometry.from_files(write_ct_series(tmp_path / "other", slices=6, size=32))
    wrong = grid.__class__(grid.shape, grid.spacing, grid.origin, grid.direction, other.instance_uids, key)
    with pytest.raises(ValidationFailed, match=r"seg.dcm: segments 6 instance\(s\) that are not slices of the series"):
        formats.read(data, "dicom-seg", name="seg.dcm", series={key: wrong})
