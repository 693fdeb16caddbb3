"""Data-stage review: real files and faults the other catalog tests do not cover."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from medcycle.catalog.ingest import ingest
from medcycle.platform import Platform


def test_nifti_with_a_wrong_or_missing_extension_is_ingested(platform: Platform, tmp_path: Path) -> None:
    """A valid NIfTI-1/2 under another name (scan.dat, a gzip-compressed scan.nii, no extension) was rejected as
    'corrupt or truncated NIfTI (ImageFileError)' or 'not a DICOM, NIfTI, PNG or JPEG file'."""
    src = tmp_path / "in"
    src.mkdir()
    one = nib.Nifti1Image(np.arange(120, dtype=np.int16).reshape(4, 5, 6), np.eye(4))  # type: ignore[no-untyped-call]
    two = nib.Nifti2Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5) + 7, np.eye(4))  # type: ignore[no-untyped-call]
    (src / "plain.dat").write_bytes(one.to_bytes())
    (src / "gzipped.nii").write_bytes(gzip.compress(one.to_bytes() + b"\0"))  # other bytes: not a duplicate
    (src / "noext").write_bytes(gzip.compress(two.to_bytes()))
    (src / "two.bin").write_bytes(two.to_bytes())
    summary = ingest(platform, [src], source="nifti-names")
    assert summary.rejected == [] and summary.ingested == 4


def test_integer_literal_beyond_64_bits_is_compared_not_a_500(platform: Platform, tmp_path: Path) -> None:
    """`rows > 99999999999999999999999` (or such a value in a list) failed with an internal error,
    OverflowError: Python int too large to convert to SQLite INTEGER."""
    from medcycle.catalog.query import run_query
    from medcycle.testing.dicom import write_radiograph

    write_radiograph(tmp_path / "cr.dcm", size=32)
    ingest(platform, [tmp_path / "cr.dcm"], source="big-numbers")
    with platform.session() as s:
        assert run_query(s, "rows > 99999999999999999999999").total == 0
        assert run_query(s, "rows < 99999999999999999999999").total == 1
        assert run_query(s, "rows in [32, -99999999999999999999]").total == 1


def test_dicomdir_with_missing_or_lower_case_files(platform: Platform, tmp_path: Path) -> None:
    """A DICOMDIR given directly whose referenced files were missing (an incomplete copy) ingested the rest and
    reported nothing about the missing ones; files copied in lower case (upper case in the DICOMDIR) were
    silently left out."""
    import shutil

    import pydicom

    tree = tmp_path / "cd"
    shutil.copytree(Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests", tree)
    shutil.rmtree(tree / "77654033" / "CR1")
    for path in sorted((tree / "98892003").rglob("*"), key=lambda p: -len(p.parts)):  # deepest first
        path.rename(path.with_name(path.name.lower()))
    summary = ingest(platform, [tree / "DICOMDIR"], source="cd")
    missing = [r for r in summary.rejected if "DICOMDIR references is missing" in r["reason"]]
    assert missing and all("/77654033/CR1/" in r["path"] for r in missing)
    assert summary.ingested == 31 - len(missing)
