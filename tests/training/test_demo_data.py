"""The demo data generator: deterministic files, truthful labels, scanner profiles, and the load into a platform."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from medcycle.catalog.deid import Pseudonymizer
from medcycle.catalog.keys import load_or_create_key
from medcycle.datasets import transfer, versions
from medcycle.platform import Platform
from medcycle.training.demo_data import CT_SCANNERS, SCANNERS, DemoData, generate, load, read_studies
from tests.training.conftest import quick


def fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    small = {"radiographs": 4, "volumes": 1, "size": 32, "volume_size": 16, "slices": 4}
    a = generate(tmp_path / "a", seed=5, **small)
    b = generate(tmp_path / "b", seed=5, **small)
    c = generate(tmp_path / "c", seed=6, **small)
    assert fingerprint(a.root) == fingerprint(b.root)  # UIDs, pixels, NIfTI and PNG masks, CSVs
    changed = fingerprint(c.root)
    assert set(changed.values()).isdisjoint(v for k, v in fingerprint(a.root).items() if k.endswith(".dcm"))
    assert a.to_dict()["radiographs"] == 4 and a.to_dict()["volumes"] == 1


def test_labels_boxes_and_masks_agree(demo: DemoData) -> None:
    rows = read_studies(demo.root)
    xr = [r for r in rows if r["kind"] == "xr"]
    assert {r["label"] for r in xr} == {"lesion", "normal"}
    assert sum(r["label"] == "lesion" for r in xr) == len(xr) // 2
    for r in xr[:12]:
        mask = np.asarray(Image.open(demo.root / r["mask"])) > 0
        if r["label"] == "normal":
            assert not mask.any() and r["x0"] == ""
            continue
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == tuple(int(r[k]) for k in ("x0", "y0", "x1", "y1"))
        dicom_mask = pydicom.dcmread(demo.root / r["dicom_mask"])
        image = pydicom.dcmread(demo.root / r["image"])
        assert dicom_mask.StudyInstanceUID == image.StudyInstanceUID == r["study_uid"]
        assert dicom_mask.SeriesInstanceUID != image.SeriesInstanceUID and dicom_mask.Modality == "SEG"
    ct = [r for r in rows if r["kind"] == "ct"]
    assert {r["label"] for r in ct} <= {"nodule", "normal"} and any(r["label"] == "nodule" for r in ct)
    with (demo.root / "manifest.csv").open(newline="") as fh:
        manifest = list(csv.DictReader(fh))
    assert {m["split"] for m in manifest} == {"train", "val", "test"}
    by_patient: dict[str, str] = {}
    for m in manifest:
        assert by_patient.setdefault(m["patient"], m["split"]) == m["split"]  # patient-level split


def test_sources_and_scanners_differ_in_intensity(demo: DemoData) -> None:
    rows = [r for r in read_studies(demo.root) if r["kind"] == "xr"]
    medians, photometric = {}, {}
    for scanner in SCANNERS:
        r = next(r for r in rows if r["model"] == scanner.model)
        ds = pydicom.dcmread(demo.root / r["image"])
        medians[scanner.model] = float(np.median(ds.pixel_array))
        photometric[scanner.model] = (ds.PhotometricInterpretation, int(ds.BitsStored), ds.get("RescaleSlope"))
        assert (ds.Manufacturer, r["source"]) == (scanner.manufacturer, scanner.source)
    assert len({round(m, -1) for m in medians.values()}) == len(SCANNERS)
    assert photometric["FlatPanel-X"][:2] == ("MONOCHROME1", 14)
    assert photometric["CR-7"] == ("MONOCHROME2", 10, 2)
    kernels = {pydicom.dcmread(next((demo.root / r["image"]).iterdir())).ConvolutionKernel
               for r in read_studies(demo.root) if r["kind"] == "ct"}
    assert kernels <= {s.kernel for s in CT_SCANNERS} and len(kernels) >= 2


def test_load_ingests_and_freezes_versions_with_pseudonymous_labels(
    sqlite_platform: Platform, demo: DemoData, tmp_path: Path
) -> None:
    refs = load(sqlite_platform, demo.root, kinds=("ct",))
    assert refs == {"demo-ct": "demo-ct@v1"}
    assert load(sqlite_platform, demo.root, kinds=("ct",)) == {"demo-ct": "demo-ct@latest"}  # idempotent
    with sqlite_platform.session() as session:
        assert len(versions.log(session, "demo-ct")) == 1
    transfer.pull(sqlite_platform, "demo-ct@v1", tmp_path / "pulled")
    with (tmp_path / "pulled" / "manifest.csv").open(newline="") as fh:
        pulled = list(csv.DictReader(fh))
    assert {r["modality"] for r in pulled} == {"CT", "SEG"}
    assert len(pulled) == 4 * 16 * 2
    pseudo = Pseudonymizer(load_or_create_key(sqlite_platform.settings.resolved_deid_key_file))
    truth = {pseudo.uid(r["study_uid"]): r["label"] for r in read_studies(demo.root) if r["kind"] == "ct"}
    for r in pulled:
        assert r["labels"] == truth[r["study"]]  # study labels reached every item, masks included

    pytest.importorskip("monai", reason="the train extra (torch, monai) is not installed")
    from medcycle.training.data import index, read_file, read_volume

    # a trainer pairs each pulled CT series with the SEG series of its study, slice by slice
    samples = index(tmp_path / "pulled", quick("segmentation-3d", path=tmp_path / "pulled"))
    nifti = {pseudo.uid(r["study_uid"]): demo.root / r["mask"] for r in read_studies(demo.root) if r["kind"] == "ct"}
    found = [s for split in samples.splits.values() for s in split]
    assert len(found) == 4
    for sample in found:
        np.testing.assert_array_equal(read_volume(sample.mask, raw=True), read_file(nifti[sample.study]))
