"""Reading a pulled folder: DICOM/NIfTI/PNG readers, slice order, labels, and every way masks are paired."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("monai", reason="the train extra (torch, monai) is not installed")

from pydicom.uid import UID, DigitalXRayImageStorageForPresentation

from medcycle.errors import UsageError, ValidationFailed
from medcycle.testing.dicom import FakePatient, base_dataset
from medcycle.training.data import (
    LoadSample,
    build_transform,
    index,
    read_dicom,
    read_file,
    read_volume,
    slice_order,
)
from medcycle.training.demo_data import DemoData, read_studies
from tests.training.conftest import quick

FIELDS = ["path", "split", "labels", "uid", "patient", "study", "series", "source", "modality", "format"]


def write_manifest(folder: Path, rows: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*FIELDS, *extra], restval="")
        writer.writeheader()
        writer.writerows(rows)
    return folder


def studies(demo: DemoData, kind: str) -> list[dict[str, str]]:
    return [r for r in read_studies(demo.root) if r["kind"] == kind]


def test_dicom_gets_the_modality_lut_and_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    ds = base_dataset(FakePatient(), "DX", DigitalXRayImageStorageForPresentation, "1.2.3", "1.2.3.4", "20240101")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5")
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME1", 16, 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-50"
    ds.PixelData = stored.tobytes()
    ds.save_as(tmp_path / "m1.dcm", enforce_file_format=True)

    values = stored.astype(np.float32) * 2 - 50
    expected = (-50 + 4095 * 2 - 50) - values  # inverted within the LUT's output range
    np.testing.assert_allclose(read_dicom(tmp_path / "m1.dcm"), expected)
    np.testing.assert_allclose(read_dicom(tmp_path / "m1.dcm", raw=True), stored)


def test_every_demo_scanner_reads_with_lungs_darker_than_bone(demo: DemoData) -> None:
    seen = set()
    for row in studies(demo, "xr")[:8]:
        image = read_file(demo.root / row["image"])
        size = image.shape[0]
        spine = image[size // 3: 2 * size // 3, size // 2 - 1: size // 2 + 1].mean()
        lung = image[int(0.42 * size): int(0.52 * size), int(0.27 * size): int(0.33 * size)].mean()
        assert spine > lung, row["model"]
        seen.add(row["model"])
    assert seen == {"DR-Alpha", "DR-Beta", "FlatPanel-X", "CR-7"}  # MONOCHROME1 and a rescale among them


def test_png_nifti_and_dicom_masks_agree(demo: DemoData) -> None:
    xr = studies(demo, "xr")[0]
    np.testing.assert_array_equal(read_file(demo.root / xr["mask"]) > 0,
                                  read_file(demo.root / xr["dicom_mask"], raw=True) > 0)
    ct = next(r for r in studies(demo, "ct") if r["label"] == "nodule")
    slices = sorted(str(p) for p in (demo.root / ct["dicom_mask"]).iterdir())
    random.Random(0).shuffle(slices)
    ordered = slice_order(slices)
    assert ordered == sorted(slices)  # slice_0000 … by ImagePositionPatient, not by the order given
    from_dicom = read_volume(ordered, raw=True)
    from_nifti = read_file(demo.root / ct["mask"])
    assert from_dicom.shape == from_nifti.shape == (16, 32, 32)
    np.testing.assert_array_equal(from_dicom, from_nifti)
    z0, z1 = int(ct["z0"]), int(ct["z1"])
    assert from_nifti[z0:z1 + 1].sum() == from_nifti.sum() > 0  # the box of labels.csv holds the nodule


def xr_rows(demo: DemoData, n: int, *, with_masks: bool) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(studies(demo, "xr")[:n]):
        base = {"split": "train" if i % 2 else "val", "labels": r["label"], "patient": r["patient_id"],
                "study": r["study_uid"], "source": r["source"], "format": "dicom"}
        out.append({**base, "path": str(demo.root / r["image"]), "uid": f"img{i}", "series": f"s{i}",
                    "modality": "DX"})
        if with_masks:
            out.append({**base, "path": str(demo.root / r["dicom_mask"]), "uid": f"msk{i}", "series": f"m{i}",
                        "modality": "SEG"})
    return out


def test_masks_come_from_the_study_a_column_or_a_sibling(demo: DemoData, tmp_path: Path) -> None:
    config = quick("segmentation-2d", path=tmp_path)
    by_study = index(write_manifest(tmp_path / "study", xr_rows(demo, 4, with_masks=True)), config)
    assert sorted(len(v) for v in by_study.splits.values()) == [2, 2]
    for sample in by_study.splits["train"]:
        assert sample.mask[0].endswith("mask.dcm") and Path(sample.mask[0]).parent == Path(sample.image[0]).parent

    by_column = index(demo.root, quick("segmentation-2d", path=demo.root))  # the demo manifest's mask column
    sample = by_column.splits["train"][0]
    assert sample.mask[0].endswith("xr.png")

    folder = tmp_path / "sibling"
    rows = xr_rows(demo, 2, with_masks=False)
    for i, row in enumerate(rows):
        image = folder / f"img{i}.dcm"
        folder.mkdir(exist_ok=True)
        image.write_bytes(Path(row["path"]).read_bytes())
        (folder / f"img{i}_mask.png").write_bytes(Path(row["path"]).with_name("mask.dcm").read_bytes())
        row["path"] = image.name
    by_sibling = index(write_manifest(folder, rows), config)
    assert [s.mask[0] for s in by_sibling.splits["val"]] == [str(folder / "img0_mask.png")]


def test_missing_and_ambiguous_masks(demo: DemoData, tmp_path: Path) -> None:
    rows = xr_rows(demo, 2, with_masks=False)
    folder = write_manifest(tmp_path / "none", rows)
    with pytest.raises(ValidationFailed, match="no mask for") as info:
        index(folder, quick("segmentation-2d", path=folder))
    assert info.value.hint and "missing_mask" in info.value.hint
    skipped = index(folder, quick("segmentation-2d", path=folder, data={"missing_mask": "skip"}))
    assert skipped.skipped == {"no mask": 2} and not skipped.splits
    empty = index(folder, quick("segmentation-2d", path=folder, data={"missing_mask": "empty"}))
    item = LoadSample(empty.task, 1)(empty.splits["val"][0].item())
    assert item["mask"].shape == item["image"].shape and item["mask"].sum() == 0

    rows = xr_rows(demo, 1, with_masks=True)
    rows.append({**rows[1], "series": "another-annotator", "uid": "x"})
    folder = write_manifest(tmp_path / "two", rows)
    with pytest.raises(ValidationFailed, match="has 2 mask series"):
        index(folder, quick("segmentation-2d", path=folder))


def test_a_ct_series_and_its_mask_series_become_one_3d_sample(demo: DemoData, tmp_path: Path) -> None:
    ct = next(r for r in studies(demo, "ct") if r["label"] == "nodule")
    rows = []
    for kind, modality in (("image", "CT"), ("mask", "SEG")):
        for k, path in enumerate(sorted((demo.root / Path(ct["image"]).parent / kind).iterdir())):
            rows.append({"path": str(path), "split": "train", "uid": f"{kind}{k}", "series": kind,
                         "study": ct["study_uid"], "modality": modality, "format": "dicom"})
    random.Random(1).shuffle(rows)
    config = quick("segmentation-3d", path=tmp_path)
    samples = index(write_manifest(tmp_path / "ct", rows), config).split("train")
    assert len(samples) == 1 and len(samples[0].image) == len(samples[0].mask) == 16
    loaded = LoadSample(config.task, 1)(samples[0].item())
    np.testing.assert_array_equal(loaded["mask"][0], read_file(demo.root / ct["mask"]))
    transformed = build_transform(config, 1, train=True)(samples[0].item())
    assert tuple(transformed["image"].shape) == (1, 16, 32, 32) == tuple(transformed["mask"].shape)
    assert float(transformed["image"].min()) >= 0.0 and float(transformed["image"].max()) <= 1.0

    two_d = quick("segmentation-2d", path=tmp_path, data={"image_modalities": ["CT"]})
    per_slice = index(tmp_path / "ct", two_d).split("train")  # 2D on slices: each slice with its mask slice
    assert len(per_slice) == 16
    assert all(Path(s.image[0]).name == Path(s.mask[0]).name for s in per_slice)


def test_classification_labels(demo: DemoData, tmp_path: Path) -> None:
    rows = xr_rows(demo, 4, with_masks=False)
    rows[0]["labels"] = ""
    folder = write_manifest(tmp_path / "cls", rows)
    config = quick("classification-2d", path=folder)
    found = index(folder, config)
    assert found.classes == ["normal", "lesion"] and found.skipped == {"unlabelled": 1}
    assert found.summary()["train_per_class"] == {"normal": 1, "lesion": 1}
    with pytest.raises(ValidationFailed, match="has no label among"):
        index(folder, quick("classification-2d", path=folder, data={"unlabelled": "error"}))
    rows[1]["labels"] = "lesion|normal"
    with pytest.raises(ValidationFailed, match="several classes"):
        index(write_manifest(tmp_path / "multi", rows), config)
    with pytest.raises(UsageError, match=r"split 'test' .* has no samples") as info:
        found.split("test")
    assert info.value.hint and "medcycle dataset freeze" in info.value.hint
    for row in rows:
        row["labels"] = "normal"
    with pytest.raises(ValidationFailed, match="at least 2 classes"):
        index(write_manifest(tmp_path / "one", rows), quick("classification-2d", path=folder,
                                                            data={"classes": None}))


def test_shapes_are_checked(demo: DemoData, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no manifest\.csv"):
        index(tmp_path, quick("classification-2d", path=tmp_path))
    ct = next(r for r in studies(demo, "ct"))
    volume = {"key": "v", "image": (str(demo.root / ct["mask"]),), "mask": (), "label": 0}
    from medcycle.training.config import TaskKind

    with pytest.raises(ValidationFailed, match="needs 2D images"):
        LoadSample(TaskKind.CLASSIFICATION_2D, 2)(volume)
    xr = studies(demo, "xr")[0]
    ct_slice = next((demo.root / ct["image"]).iterdir())
    with pytest.raises(ValidationFailed, match=r"has shape \(64, 64\), its image \(32, 32\)"):
        LoadSample(TaskKind.SEGMENTATION_2D, 1)({"key": "k", "image": (str(ct_slice),),
                                                  "mask": (str(demo.root / xr["mask"]),), "label": -1})
    with pytest.raises(UsageError, match="is missing"):
        read_file(tmp_path / "gone.dcm")
