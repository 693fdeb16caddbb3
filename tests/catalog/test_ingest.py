"""Ingest end to end: real DICOM test files, synthetic studies, broken inputs, idempotence, kill -9."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
import sqlalchemy.exc
from sqlalchemy import func, inspect, select, text

from medcycle.catalog.deid import DeidOptions, Pseudonymizer
from medcycle.catalog.ingest import ingest
from medcycle.catalog.ingest_rows import CatalogWriter
from medcycle.catalog.keys import load_or_create_key
from medcycle.catalog.tables import InstanceRow, PatientRow, SeriesRow, StudyRow
from medcycle.objects.tables import ObjectRefRow
from medcycle.platform import Platform
from medcycle.testing.dicom import FakePatient, write_ct_series, write_radiograph

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DATA_STORE = Path(pydicom.data.get_testdata_file("RG1_UNCR.dcm") or "").parent  # pydicom-data files


def _decodable(path: Path) -> pydicom.Dataset | None:
    """The oracle: pydicom alone can read the file and decode its pixels, and it has its UIDs.

    pydicom warns about odd values in some of its own test files; those warnings are not ours to test.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
            if "PixelData" not in ds or "DirectoryRecordSequence" in ds:
                return None
            if not all(str(ds.get(k, "")) for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")):
                return None
            ds.pixel_array  # noqa: B018 - decoding is the check
            # touch every element now, so later reads of this dataset raise no validation warnings
            for elem in ds.iterall():
                _ = elem.value
            return ds
        except Exception:
            return None


def _catalog_counts(platform: Platform) -> dict[str, int]:
    with platform.session() as s:
        return {
            "patients": s.scalar(select(func.count()).select_from(PatientRow)) or 0,
            "studies": s.scalar(select(func.count()).select_from(StudyRow)) or 0,
            "series": s.scalar(select(func.count()).select_from(SeriesRow)) or 0,
            "instances": s.scalar(select(func.count()).select_from(InstanceRow)) or 0,
            "series_sum": s.scalar(select(func.coalesce(func.sum(SeriesRow.n_instances), 0))) or 0,
            "refs": s.scalar(select(func.count()).select_from(ObjectRefRow)) or 0,
        }


def _everything_stored(platform: Platform) -> bytes:
    """Every byte medcycle keeps: files under the home (SQLite, objects, keys) and every DB row as text."""
    chunks = []
    for path in sorted(platform.settings.home.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            chunks.append(data)
            if path.suffix == ".gz" or data[:2] == b"\x1f\x8b":
                chunks.append(gzip.decompress(data))
    with platform.engine.connect() as conn:
        for table in inspect(platform.engine).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                chunks.append(repr(tuple(row)).encode())
    return b"\n".join(chunks)


def _identifying_values(files: list[Path]) -> set[str]:
    """Original values of attributes PS3.15 Table E.1-1 does not let through (dates checked apart)."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    table = dicom_anonymization_database_selector("dicomfields_2026c")
    listed = {
        tuple(t) if isinstance(t, list | tuple) else t for cat, tags in table.items() if cat != "ALL_TAGS" for t in tags
    }
    listed_ints = {
        (t[0] << 16) | t[1]
        for t in listed
        if isinstance(t, tuple) and len(t) == 2 and all(isinstance(x, int) for x in t)
    }
    retained = DeidOptions().retained_tags()
    values: set[str] = set()
    kept: set[str] = set()  # values of attributes the profile keeps: the same text there is no leak

    def walk(ds: pydicom.Dataset) -> None:
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
                continue
            if elem.VR in {"DA", "DT", "TM", "US", "SS", "UL", "SL", "FL", "FD", "OB", "OW", "UN"}:
                continue
            tag = int(elem.tag)
            listed_here = tag in listed_ints and tag not in retained and not elem.tag.is_private
            for v in elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]:
                s = str(v).strip()
                if listed_here and len(s) >= 6 and not s.startswith("1.2.840.10008"):
                    values.add(s)
                elif not listed_here and not elem.tag.is_private:
                    kept.add(s)

    for f in files:
        ds = _decodable(f)
        if ds is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's own test files hold odd values on purpose
                walk(ds)
    return {v for v in values if not any(v in k for k in kept)}


def test_real_dicom_files_ingest_without_leaking_identifiers(platform: Platform, tmp_path: Path) -> None:
    inputs = [PYDICOM_FILES, DATA_STORE]
    files = sorted(p for root in inputs for p in root.rglob("*") if p.is_file())
    summary = ingest(platform, inputs, source="pydicom", jobs=2, actor="test")
    assert summary.ingested > 40
    assert summary.ingested + summary.duplicates + len(summary.rejected) + len(summary.quarantined) + len(
        summary.skipped
    ) + len(summary.conflicts) == len(files)
    assert all(r["reason"] for r in summary.rejected + summary.quarantined + summary.skipped + summary.conflicts)
    assert summary.conflicts  # pydicom keeps one image in many transfer syntaxes, under one SOP Instance UID

    pseudo = Pseudonymizer(load_or_create_key(platform.settings.resolved_deid_key_file))
    rejected = {r["path"] for r in summary.rejected}
    with platform.session() as s:
        stored = set(s.scalars(select(InstanceRow.uid)))
    for f in files:
        ds = _decodable(f)
        if ds is None:
            continue
        assert str(f) not in rejected, f"{f.name} is decodable but was rejected"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sop = str(ds.SOPInstanceUID)
        assert pseudo.uid(sop) in stored, f"{f.name} is decodable but not in the catalog"

    blob = _everything_stored(platform)
    leaks = sorted(v for v in _identifying_values(files) if v.encode() in blob)
    assert not leaks, f"original identifying values found in the home or database: {leaks[:10]}"
    for name in ("CompressedSamples^CT1", "CT_small", "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"):
        assert name.encode() not in blob


def test_synthetic_study_fields_relink_and_dates(platform: Platform, tmp_path: Path) -> None:
    patient = FakePatient()
    write_ct_series(tmp_path / "a" / "ct", patient, slices=4, study_date="20240315")
    dx_study = pydicom.uid.generate_uid()
    write_radiograph(tmp_path / "b" / "dx.dcm", patient, study_date="20240901", study_uid=dx_study)
    write_radiograph(tmp_path / "b" / "dx_m1.dcm", patient, study_date="20240901", monochrome1=True, study_uid=dx_study)
    first = ingest(platform, [tmp_path / "a"], source="clinic-a")
    second = ingest(platform, [tmp_path / "b"], source="clinic-a")
    assert (first.ingested, second.ingested) == (4, 2)
    with platform.session() as s:
        patients = s.scalars(select(PatientRow)).all()
        assert len(patients) == 1, "the second study of the same patient must re-link"
        assert patients[0].sex == "F"
        studies = s.scalars(select(StudyRow).order_by(StudyRow.study_date)).all()
        assert len(studies) == 2
        assert studies[0].study_date is not None and studies[0].study_date.isoformat() != "2024-03-15"
        gap = (studies[1].study_date - studies[0].study_date).days  # type: ignore[operator]
        assert gap == 170, "date shifts must keep intervals within a patient"
        assert studies[0].age_band == "60-69"
        ct = s.scalars(select(SeriesRow).where(SeriesRow.modality == "CT")).one()
        assert (ct.body_part, ct.body_part_raw, ct.n_instances) == ("chest", "CHEST", 4)
        assert (ct.slice_thickness, ct.kvp, ct.convolution_kernel) == (1.25, 120.0, "B30f")
        assert (ct.manufacturer, ct.model, ct.pixel_spacing_row) == ("Medcycle Phantoms", "Phantom-9000", 0.7)
        inst = s.scalars(select(InstanceRow).join(SeriesRow).where(SeriesRow.modality == "CT")).first()
        assert inst is not None and inst.air_fraction is not None and inst.p01 is not None
        assert inst.air_fraction > 0.2 and inst.p01 < -900  # Hounsfield units after rescale
        dx = {
            i.photometric: i
            for i in s.scalars(
                select(InstanceRow)
                .where(InstanceRow.format == "dicom")
                .join(SeriesRow)
                .where(SeriesRow.modality == "DX")
            )
        }
        assert set(dx) == {"MONOCHROME1", "MONOCHROME2"}
        # MONOCHROME1 is inverted for statistics: both renderings of the same image agree.
        assert dx["MONOCHROME1"].mean == pytest.approx(dx["MONOCHROME2"].mean, rel=0.02)
    blob = _everything_stored(platform)
    for value in patient.all_identifiers():
        assert value.encode() not in blob


def test_reingest_adds_nothing(platform: Platform, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "in" / "ct", slices=5)
    first = ingest(platform, [tmp_path / "in"], source="s1")
    before = _catalog_counts(platform)
    again = ingest(platform, [tmp_path / "in"], source="s1")
    assert (first.ingested, again.ingested, again.duplicates) == (5, 0, 5)
    assert _catalog_counts(platform) == before
    assert before["series_sum"] == before["instances"] == before["refs"] == 5


@pytest.mark.parametrize("by_file", [False, True], ids=["batch", "file-by-file"])
def test_same_uid_with_other_content_is_a_conflict_not_a_silent_duplicate(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_file: bool
) -> None:
    """A second file with a catalogued SOP Instance UID but other bytes was counted as a duplicate, unnamed."""
    first, second = write_ct_series(tmp_path / "in" / "ct", slices=2)
    assert ingest(platform, [tmp_path / "in"], source="s1").ingested == 2
    if by_file:  # as when a concurrent ingest wrote some of the same rows: each outcome is written on its own

        def clash(self: CatalogWriter, outs: list[object]) -> list[str]:
            raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("simulated concurrent ingest"))

        monkeypatch.setattr(CatalogWriter, "_bulk", clash)
    with platform.session() as s:
        kept = {(r.uid, r.digest, r.transfer_syntax) for r in s.scalars(select(InstanceRow))}
    again = tmp_path / "again"
    again.mkdir()
    ds = pydicom.dcmread(first)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian  # the same image, encoded otherwise
    ds.save_as(again / "reencoded.dcm", implicit_vr=True, little_endian=True, enforce_file_format=True)
    shutil.copy(second, again / "copy.dcm")  # byte-identical: a plain duplicate
    summary = ingest(platform, [again], source="s1")
    assert (summary.ingested, summary.duplicates, summary.rejected, summary.quarantined) == (0, 1, [], [])
    reason = ("same SOP Instance UID as an instance already catalogued, different content; not stored "
              "(the catalogued instance is kept)")
    assert summary.conflicts == [{"path": str(again / "reencoded.dcm"), "reason": reason}]
    assert summary.to_dict()["conflicts"] == summary.conflicts and summary.counts()["conflicts"] == 1
    with platform.session() as s:
        assert {(r.uid, r.digest, r.transfer_syntax) for r in s.scalars(select(InstanceRow))} == kept
    rerun = ingest(platform, [again], source="s1")  # adds nothing, and still names the file not stored
    assert (rerun.ingested, rerun.duplicates, rerun.conflicts) == (0, 1, summary.conflicts)
    pooled = ingest(platform, [again / "reencoded.dcm"], source="s1", jobs=2)  # worker processes, same answer
    assert (pooled.duplicates, pooled.conflicts) == (0, summary.conflicts)
    with platform.session() as s:  # "not stored": the conflicting file's object was removed, not left for gc
        referenced = set(s.scalars(select(ObjectRefRow.digest)))
    assert len(referenced) == 2 and {o.digest for o in platform.objects.list()} == referenced


def test_formats_archives_and_bad_input(platform: Platform, tmp_path: Path) -> None:
    import nibabel as nib
    from PIL import Image

    src = tmp_path / "in"
    series = write_ct_series(src / "ct", slices=3)
    with zipfile.ZipFile(src / "bundle.zip", "w") as zf:
        for p in write_ct_series(tmp_path / "forzip", slices=2):
            zf.write(p, f"zipped/{p.name}")
    anat = src / "bids" / "sub-007" / "ses-01" / "anat"
    anat.mkdir(parents=True)
    img = nib.Nifti1Image(np.random.default_rng(0).normal(size=(16, 16, 8)).astype(np.float32), np.eye(4))
    img.header["descrip"] = b"Sokolova Anna scan"
    nib.save(img, anat / "sub-007_ses-01_T1w.nii.gz")
    png = Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8))
    info = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
    info.add_text("Author", "Sokolova Anna")
    png.save(src / "xray.png", pnginfo=info)
    png.convert("RGB").save(src / "photo.jpg", quality=90)
    (src / "notes.txt").write_text("not an image")
    truncated = src / "truncated.dcm"
    truncated.write_bytes(series[0].read_bytes()[:2000])
    summary = ingest(platform, [src], source="mixed", modality="MR", body_part="head")
    assert summary.ingested == 3 + 2 + 1 + 2
    reasons = {Path(r["path"]).name: r["reason"] for r in summary.rejected}
    assert set(reasons) == {"notes.txt", "truncated.dcm"}
    assert "not a DICOM" in reasons["notes.txt"]
    assert "truncated" in reasons["truncated.dcm"] or "decoded" in reasons["truncated.dcm"]
    with platform.session() as s:
        formats = sorted(s.scalars(select(InstanceRow.format)))
        assert formats.count("nifti") == 1 and formats.count("png") == 2
        nifti = s.scalars(select(InstanceRow).where(InstanceRow.format == "nifti")).one()
        assert (nifti.rows, nifti.columns, nifti.frames) == (16, 16, 8)
    data = platform.objects.get(nifti.digest)
    assert b"Sokolova" not in gzip.decompress(data)
    for d in (i.digest for i in _instances(platform, "png")):
        assert b"Sokolova" not in platform.objects.get(d)
        Image.open(io.BytesIO(platform.objects.get(d))).load()

    small = Platform(platform.settings.model_copy(update={"ingest_max_file_bytes": 1000}))
    try:
        big = ingest(small, [series[1]], source="mixed")
    finally:
        small.close()
    assert "larger than the limit" in big.rejected[0]["reason"]


def _instances(platform: Platform, fmt: str) -> list[InstanceRow]:
    with platform.session() as s:
        return list(s.scalars(select(InstanceRow).where(InstanceRow.format == fmt)))


def test_dicomdir_tree(platform: Platform) -> None:
    tree = PYDICOM_FILES / "dicomdirtests"
    summary = ingest(platform, [tree / "DICOMDIR"], source="dicomdir")
    assert [Path(r["path"]).name for r in summary.skipped] == ["DICOMDIR"]
    assert summary.ingested > 0, "the files the DICOMDIR references are ingested"
    with platform.session() as s:
        assert s.scalar(select(func.count()).select_from(InstanceRow)) == summary.ingested + len(summary.quarantined)
    # Some of the tree's images were stripped of pixel data by pydicom's authors: rejected with that reason.
    assert all(r["reason"].startswith("no image pixel data") for r in summary.rejected)


def test_source_keeps_its_deid_options(platform: Platform, tmp_path: Path) -> None:
    from medcycle.errors import Conflict

    write_ct_series(tmp_path / "in", slices=1)
    ingest(platform, [tmp_path / "in"], source="s")
    with pytest.raises(Conflict) as err:
        ingest(platform, [tmp_path / "in"], source="s", options=DeidOptions(retain_device_identity=False))
    assert "new source name" in (err.value.hint or "")


def test_kill_during_ingest_then_rerun_completes_exactly(platform: Platform, tmp_path: Path) -> None:
    src = tmp_path / "in"
    total = 0
    for i in range(6):  # enough that the work after the first committed batch outlasts the poll and the kill
        total += len(write_ct_series(src / f"s{i}", FakePatient(patient_id=f"MRN-{i:05d}"), slices=80, seed=i))
    env = {
        **os.environ,
        "MEDCYCLE_HOME": str(platform.settings.home),
        "MEDCYCLE_DATABASE_URL": platform.settings.resolved_database_url,
        "MEDCYCLE_ENVIRONMENT": "test",
        "MEDCYCLE_SECRET_KEY": platform.settings.secret_key.get_secret_value(),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "medcycle", "data", "ingest", str(src), "--source", "k", "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while _catalog_counts(platform)["instances"] < 40:
            assert proc.poll() is None, "ingest finished before it could be killed; make the input larger"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    partial = _catalog_counts(platform)["instances"]
    assert 0 < partial < total
    again = ingest(platform, [src], source="k")
    counts = _catalog_counts(platform)
    assert counts["instances"] == counts["series_sum"] == counts["refs"] == total
    assert again.ingested == total - partial
    assert counts["series"] == 6 and counts["patients"] == 6
    shutil.rmtree(src)


@pytest.mark.timeout(60)
def test_links_pipes_and_non_image_nifti_in_a_folder_are_rejected_not_fatal(platform: Platform, tmp_path: Path) -> None:
    """A dangling symlink, a named pipe and a CIFTI-2 file (NIfTI-2 container without an image) each get a reason;
    before, the first stopped the ingest with an internal error, the second hung it for ever, the third asked to
    be reported as an unexpected failure."""
    src = tmp_path / "in"
    write_ct_series(src / "ct", slices=2)
    (src / "gone.dcm").symlink_to(tmp_path / "deleted.dcm")
    os.mkfifo(src / "pipe.dcm")
    cifti = Path(__import__("nibabel").__file__).parent / "tests" / "data" / "row_major.dconn.nii"
    shutil.copy(cifti, src / "conn.dconn.nii")
    summary = ingest(platform, [src], source="odd")
    assert summary.ingested == 2
    reasons = {Path(r["path"]).name: r["reason"] for r in summary.rejected}
    assert set(reasons) == {"gone.dcm", "pipe.dcm", "conn.dconn.nii"}
    assert "symbolic link" in reasons["gone.dcm"]
    assert "not a regular file" in reasons["pipe.dcm"]
    assert "CIFTI" in reasons["conn.dconn.nii"] and "unexpected" not in reasons["conn.dconn.nii"]


def test_zip_archives_with_same_name_members_damage_and_encryption(platform: Platform, tmp_path: Path) -> None:
    """Two members with one name are two files (the first was never read and the second counted twice); a damaged
    central directory, an encrypted member and a zip inside the zip are rejected with their own reasons."""
    src = tmp_path / "in"
    src.mkdir()
    first = write_ct_series(tmp_path / "a", slices=1)[0].read_bytes()
    second = write_ct_series(tmp_path / "b", slices=1)[0].read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name: that is the point
        with zipfile.ZipFile(src / "export.zip", "w") as zf:
            zf.writestr("x/slice.dcm", first)
            zf.writestr("x/slice.dcm", second)
            zf.writestr("inner.zip", b"PK\x05\x06" + b"\0" * 18)
    damaged = bytearray((src / "export.zip").read_bytes())
    at = damaged.find(b"PK\x01\x02")
    damaged[at : at + 4] = b"XXXX"
    (src / "damaged.zip").write_bytes(bytes(damaged))
    with zipfile.ZipFile(src / "locked.zip", "w") as zf:
        zf.writestr("locked.dcm", first)
    locked = bytearray((src / "locked.zip").read_bytes())
    locked[locked.find(b"PK\x03\x04") + 6] |= 1  # the "encrypted" flag, in the local and the central header
    locked[locked.find(b"PK\x01\x02") + 8] |= 1
    (src / "locked.zip").write_bytes(bytes(locked))

    summary = ingest(platform, [src], source="zips")
    assert (summary.ingested, summary.duplicates) == (2, 0)
    reasons = {r["path"].split("in/", 1)[1]: r["reason"] for r in summary.rejected}
    assert set(reasons) == {"damaged.zip", "export.zip!inner.zip", "locked.zip!locked.dcm"}
    assert "corrupt or truncated zip archive" in reasons["damaged.zip"]
    assert "inside a zip archive" in reasons["export.zip!inner.zip"]
    assert "encrypted" in reasons["locked.zip!locked.dcm"]


def test_cmyk_jpeg_and_alpha_png(platform: Platform, tmp_path: Path) -> None:
    """A CMYK JPEG (Adobe) was rejected as unreadable (PNG cannot hold CMYK); an alpha channel was counted as
    pixels (an opaque grey PNG with alpha had a median of 255) and made a grey image 'RGB'."""
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    grey = Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 100).astype(np.uint8))
    grey.convert("CMYK").save(src / "scan.jpg")
    grey.convert("LA").save(src / "grey-alpha.png")
    grey.convert("RGBA").save(src / "colour-alpha.png")
    summary = ingest(platform, [src], source="raster")
    assert summary.rejected == [] and summary.ingested == 3
    with platform.session() as s:
        rows = {r.bytes: r for r in s.scalars(select(InstanceRow))}
        by_photometric = sorted((r.photometric, r.p50) for r in rows.values())
    assert [p for p, _ in by_photometric] == ["MONOCHROME2", "RGB", "RGB"]
    assert all(median is not None and median < 100 for _, median in by_photometric)


def test_nifti_pair_image_half_is_skipped_not_rejected(platform: Platform, tmp_path: Path) -> None:
    """A NIfTI pair (scan.hdr + scan.img) was ingested through its header, and its .img reported as rejected,
    'not a DICOM, NIfTI, PNG or JPEG file', as if data had been refused."""
    import nibabel as nib

    src = tmp_path / "in"
    src.mkdir()
    nib.save(nib.Nifti1Pair(np.arange(120, dtype=np.int16).reshape(4, 5, 6), np.eye(4)), src / "scan.hdr")
    (src / "lonely.img").write_bytes(b"\0" * 64)  # no header beside it: not part of a pair
    summary = ingest(platform, [src], source="pairs")
    assert summary.ingested == 1
    assert [(Path(r["path"]).name, r["reason"]) for r in summary.skipped] == [
        ("scan.img", "the image file of a NIfTI pair (read with its .hdr)")]
    assert [Path(r["path"]).name for r in summary.rejected] == ["lonely.img"]


def _pair(folder: Path, stem: str, values: np.ndarray) -> tuple[Path, Path]:
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Pair(values, np.eye(4)), folder / f"{stem}.hdr")  # type: ignore[no-untyped-call]
    return folder / f"{stem}.hdr", folder / f"{stem}.img"


def _pair_rows(platform: Platform) -> list[tuple[str, int | None, int | None, int | None]]:
    with platform.session() as s:
        return sorted((r.format, r.rows, r.columns, r.frames) for r in s.scalars(select(InstanceRow)))


def test_nifti_pair_inside_a_zip_is_read_with_both_halves(platform: Platform, tmp_path: Path) -> None:
    """A scan.hdr + scan.img pair in a zip was refused ('extract the archive'): each member was extracted alone,
    so the header missed its image. Now the header is extracted with its image and the pair is one volume;
    the image half is skipped, named, and a header whose image is not in the archive is rejected."""
    hdr, img = _pair(tmp_path / "src", "scan", np.arange(120, dtype=np.int16).reshape(4, 5, 6))
    lonely, _ = _pair(tmp_path / "lonely", "alone", np.ones((3, 3, 2), dtype=np.int16))
    with zipfile.ZipFile(tmp_path / "pair.zip", "w") as zf:
        zf.write(hdr, "sub-01/Scan.HDR")  # the halves' cases differ: matched as a pair all the same
        zf.write(img, "sub-01/Scan.img")
        zf.write(lonely, "sub-02/alone.hdr")
    summary = ingest(platform, [tmp_path / "pair.zip"], source="zipped-pair")
    assert summary.ingested == 1, summary.counts()
    assert [(r["path"].split("!")[1], r["reason"]) for r in summary.skipped] == [
        ("sub-01/Scan.img", "the image file of a NIfTI pair (read with its .hdr)")]
    assert [(r["path"].split("!")[1], r["reason"]) for r in summary.rejected] == [("sub-02/alone.hdr", (
        "a NIfTI pair header (.hdr) without its image (.img): put the .img beside it, with the same name, and "
        "ingest both again"))]
    assert _pair_rows(platform) == [("nifti", 4, 5, 6)]
    with platform.session() as s:
        row = s.scalars(select(InstanceRow)).one()
        assert row.p50 is not None and 59 <= row.p50 <= 60  # the image's values (0..119), not the header's
    again = ingest(platform, [tmp_path / "pair.zip"], source="zipped-pair")
    assert (again.ingested, again.duplicates) == (0, 1)


def test_nifti_pair_key_covers_its_image(platform: Platform, tmp_path: Path) -> None:
    """A pair was keyed by its header alone: with a new image under the same header, a re-ingest called the
    changed volume 'already ingested' and left it out."""
    src = tmp_path / "in"
    _pair(src, "scan", np.zeros((4, 5, 6), dtype=np.int16))
    assert ingest(platform, [src], source="pairs").ingested == 1
    _pair(src, "scan", np.full((4, 5, 6), 7, dtype=np.int16))  # the same header bytes, another image
    again = ingest(platform, [src], source="pairs")
    assert (again.ingested, again.duplicates) == (1, 0), again.counts()
    assert [Path(r["path"]).name for r in again.skipped] == ["scan.img"]


def test_nifti_pair_given_by_its_header_and_in_mixed_case(platform: Platform, tmp_path: Path) -> None:
    """A pair's header given as a file argument is read with its image; halves whose names differ in case
    (SCAN.hdr, SCAN.IMG, as some scanners' media have them) are found as a pair in a folder too."""
    hdr, _ = _pair(tmp_path / "one", "brain", np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    assert ingest(platform, [hdr], source="given").ingested == 1
    hdr2, img2 = _pair(tmp_path / "two", "tmp", np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    hdr2.rename(tmp_path / "two" / "SCAN.hdr")
    img2.rename(tmp_path / "two" / "SCAN.IMG")
    summary = ingest(platform, [tmp_path / "two"], source="mixed")
    assert summary.ingested == 1 and summary.rejected == [], summary.counts()
    assert [Path(r["path"]).name for r in summary.skipped] == ["SCAN.IMG"]
    assert _pair_rows(platform) == [("nifti", 2, 3, 4), ("nifti", 3, 4, 5)]


def test_cli_names_conflicts_in_its_summary(
    tmp_path: Path, cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`medcycle data ingest` showed a conflicting file as one more duplicate; --json lists it under conflicts."""
    from medcycle.cli.errors import run
    from medcycle.cli.main import app

    first = write_ct_series(tmp_path / "in", slices=1)[0]
    ds = pydicom.dcmread(first)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    (tmp_path / "again").mkdir()
    ds.save_as(tmp_path / "again" / "re.dcm", implicit_vr=True, little_endian=True, enforce_file_format=True)
    assert run(app, ["init"]) == 0
    assert run(app, ["data", "ingest", str(tmp_path / "in"), "--source", "s1"]) == 0
    capsys.readouterr()
    assert run(app, ["data", "ingest", str(tmp_path / "again"), "--source", "s1"]) == 0
    out = capsys.readouterr().out
    assert "0 duplicates" in out and "1 not stored (conflicts)" in out and "Conflicts: not stored" in out
    assert "re.dcm" in out and "same SOP Instance UID as an instance already catalogued" in out
    assert run(app, ["data", "ingest", str(tmp_path / "again"), "--source", "s1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["duplicates"] == 0 and [c["path"] for c in doc["conflicts"]] == [str(tmp_path / "again" / "re.dcm")]


def test_a_folder_that_cannot_be_read_is_rejected_and_the_rest_ingested(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subfolder of mode 000 was skipped by the walk without a word: its files were missing from the summary."""
    src = tmp_path / "in"
    write_ct_series(src / "a", slices=2)
    write_ct_series(src / "locked", slices=2, seed=1)
    write_ct_series(src / "z", slices=2, seed=2)
    locked = str(src / "locked")
    real = os.scandir

    def scandir(path: str | os.PathLike[str] = ".") -> Iterator[os.DirEntry[str]]:
        if os.fspath(path) == locked:  # as for anyone but root, who runs the tests
            raise PermissionError(13, "Permission denied", locked)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)  # what inputs' os.walk lists folders with
    summary = ingest(platform, [src], source="s1")
    assert summary.ingested == 4 and summary.duplicates == 0
    assert [r["path"] for r in summary.rejected] == [locked]
    assert summary.rejected[0]["reason"].startswith("cannot read the folder (PermissionError)")
