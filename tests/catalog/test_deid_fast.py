"""The byte-level de-identification path gives what the pydicom path gives, and leaks nothing either.

Every readable file of pydicom's test files and pydicom-data goes through both paths under several option
sets; read back with ``dcmread``, the two results must hold the same elements with the same values (file
meta included) and the same pseudonyms and screening result, and the bytes the fast path writes must not
contain any original PS3.15-listed value. Synthetic files cover what the corpus has little of: identifiers
inside nested sequences, private tags and private sequences, every encoding.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from sqlalchemy import select

from medcycle.catalog import ingest_worker
from medcycle.catalog.deid import DeidOptions, DeidResult, Pseudonymizer, deidentify
from medcycle.catalog.deid_fast import Fallback, FastResult, deidentify_bytes
from medcycle.catalog.ingest import ingest
from medcycle.catalog.pixels import pixel_stats
from medcycle.catalog.readers import Rejected
from medcycle.catalog.tables import InstanceRow, SeriesRow, StudyRow
from medcycle.errors import MedcycleError
from medcycle.platform import Platform
from medcycle.testing.dicom import FakePatient, write_ct_series
from tests.catalog.test_deid import _forbidden_and_legit, _read, _readable

KEY = bytes(range(32))
OPTION_SETS = {
    "default": DeidOptions(),
    "strict": DeidOptions(retain_longitudinal_dates_modified=False, retain_patient_characteristics=False,
                          retain_device_identity=False),
    "private": DeidOptions(retain_safe_private=True, private_allowlist=("SIEMENS CSA HEADER", "GEMS_IDEN_01")),
}
RESULT_FIELDS = ("patient", "study_uid", "series_uid", "sop_uid", "date_shift_days", "study_date", "sex", "age_band",
                 "quarantine_reason", "counts")


def _dcmread(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corpus's odd values warn again when read back
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.walk(lambda _ds, _elem: None)
    return ds


def _slow(data: bytes, options: DeidOptions, key: str) -> tuple[bytes, DeidResult] | None:
    """The pydicom path as ingest runs it; None where it fails (the file would be rejected)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
            result = deidentify(ds, Pseudonymizer(KEY), options, issuer="src", fallback_key=key)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
    except Exception:
        return None
    return buf.getvalue(), result


def _fast(data: bytes, options: DeidOptions, key: str) -> FastResult:
    return deidentify_bytes(data, Pseudonymizer(KEY), options, issuer="src", fallback_key=key)


def _differences(a: Dataset, b: Dataset, where: str = "") -> list[str]:
    out = []
    for tag in sorted(set(a.keys()) | set(b.keys())):
        if tag not in a or tag not in b:
            out.append(f"{where}{tag} only in {'the fast' if tag in b else 'the pydicom'} path")
            continue
        x, y = a[tag], b[tag]
        if x.VR != y.VR:
            out.append(f"{where}{tag} VR {x.VR} != {y.VR}")
        elif x.VR == "SQ":
            if len(x.value) != len(y.value):
                out.append(f"{where}{tag} has {len(x.value)} != {len(y.value)} items")
            for i, (p, q) in enumerate(zip(x.value, y.value, strict=False)):
                out += _differences(p, q, f"{where}{tag}[{i}].")
        elif x.value != y.value:
            out.append(f"{where}{tag} values differ")
    return out


def _assert_same(slow: tuple[bytes, DeidResult], fast: FastResult) -> None:
    expected, got = _dcmread(slow[0]), _dcmread(fast.data)
    assert _differences(expected, got) == []
    assert _differences(expected.file_meta, got.file_meta) == []
    assert got.preamble == bytes(128)
    for name in RESULT_FIELDS:
        assert getattr(fast.result, name) == getattr(slow[1], name), name


def _leaks(original: Dataset, options: DeidOptions, data: bytes) -> list[str]:
    forbidden, _ = _forbidden_and_legit(original, options)
    leaked = []
    for value in forbidden:
        for encoding in ("utf-8", "latin-1"):
            try:
                if value.encode(encoding) in data:
                    leaked.append(value)
            except UnicodeEncodeError:
                pass
    return leaked




@pytest.mark.parametrize("option_set", sorted(OPTION_SETS))
@pytest.mark.parametrize("path", _readable(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_both_paths_give_the_same_dataset_and_the_fast_one_leaks_nothing(path: Path, option_set: str) -> None:
    options = OPTION_SETS[option_set]
    data = path.read_bytes()
    key = hashlib.sha256(data).hexdigest()
    slow = _slow(data, options, key)
    try:
        fast = _fast(data, options, key)
    except (Fallback, MedcycleError):
        return  # ingest takes the pydicom path for this file (how often is checked below)
    assert slow is not None, "the fast path accepted a file the pydicom path cannot de-identify"
    _assert_same(slow, fast)
    original = _read(path)
    assert original is not None
    if options.private_allowlist:  # allow-listed private values are kept on purpose (the same as the pydicom path)
        original.remove_private_tags()
    assert _leaks(original, options, fast.data) == []


def test_most_of_the_corpus_takes_the_fast_path() -> None:
    """Guards the test above against a fast path that falls back on everything."""
    fast = 0
    for path in _readable():
        data = path.read_bytes()
        try:
            _fast(data, DeidOptions(), hashlib.sha256(data).hexdigest())
        except (Fallback, MedcycleError):
            continue
        fast += 1
    assert fast >= 0.8 * len(_readable())


# -- synthetic files ----------------------------------------------------------------------------------------
SECRETS = ("Petrova^Olga", "MRN-77711", "ACC-99123", "Gorodskaya Bolnitsa", "Sidorov^Ivan", "19540101")


def _item(**values: Any) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _synthetic(transfer_syntax: str, *, undefined: bool) -> bytes:
    """A CT slice with identifiers in nested sequences, private tags and a private sequence."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5.6.7.1")
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.SourceApplicationEntityTitle = "WARD_B_PACS"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5.6.7.1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4.5.6.1", "1.2.3.4.5.6.2"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = SECRETS[0], SECRETS[1], SECRETS[5]
    ds.AccessionNumber, ds.InstitutionName = SECRETS[2], SECRETS[3]
    ds.StudyDate, ds.SeriesDate, ds.StudyTime = "20240301", "20240301", "101500"
    ds.Modality, ds.PatientSex, ds.PatientAge = "CT", "F", "070Y"
    ds.StudyDescription = f"CT chest {SECRETS[1]}"
    ds.Manufacturer, ds.BodyPartExamined = "ACME", "CHEST"
    ds.ManufacturerModelName = f"Scanner {SECRETS[2]}"  # an identifier echoed into a kept attribute
    ds.RequestAttributesSequence = Sequence([
        _item(RequestedProcedureID="RP-7788", ScheduledProcedureStepID="SPS-1", AccessionNumber=SECRETS[2],
              RequestedProcedureDescription=f"for {SECRETS[4]}"),
    ])
    ds.ReferencedStudySequence = Sequence([
        _item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1", ReferencedSOPInstanceUID="1.2.3.4.5.6.99"),
    ])
    ds.ReferencedSeriesSequence = Sequence([_item(SeriesInstanceUID="1.2.3.4.5.6.98")])  # not listed: cleaned
    ds.ContentSequence = Sequence([_item(TextValue=SECRETS[0])])  # D on a sequence: emptied
    # X/Z/U*: kept and cleaned item by item, at depth two.
    ds.ReferencedImageSequence = Sequence([
        _item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID="1.2.3.4.5.6.7.0",
              PurposeOfReferenceCodeSequence=Sequence([
                  _item(CodeValue="121311", CodingSchemeDesignator="DCM", CodeMeaning=f"Localizer {SECRETS[1]}"),
              ])),
    ])
    ds.add_new(0x00090010, "LO", "GEMS_IDEN_01")
    ds.add_new(0x00090011, "LO", "OTHER VENDOR")
    ds.add_new(0x00091001, "LO", "kept: its creator is allow-listed")
    ds.add_new(0x00091101, "LO", SECRETS[3])  # block 0x11: a creator not allow-listed
    ds.add_new(0x00111010, "LO", "ACME PRIVATE")
    ds.add_new(0x00111001, "LO", SECRETS[4])
    ds.add_new(0x00111002, "SQ", Sequence([_item(PatientName=SECRETS[0])]))
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    big = transfer_syntax == ExplicitVRBigEndian
    ds.PixelData = np.arange(-32, 32, dtype=">i2" if big else "<i2").tobytes()
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = undefined
            for item in elem.value:
                item.is_undefined_length_sequence_item = undefined
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("option_set", ["default", "private"])
def test_identifiers_in_sequences_and_private_tags(transfer_syntax: str, undefined: bool, option_set: str) -> None:
    options = OPTION_SETS[option_set]
    data = _synthetic(transfer_syntax, undefined=undefined)
    key = hashlib.sha256(data).hexdigest()
    fast = _fast(data, options, key)  # no Fallback: this is the fast path's own ground
    slow = _slow(data, options, key)
    assert slow is not None
    _assert_same(slow, fast)
    for secret in SECRETS:
        assert secret.encode() not in fast.data
    assert b"1.2.3.4.5.6" not in fast.data  # every instance UID, nested ones too, is replaced
    assert b"WARD_B_PACS" not in fast.data and b"RP-7788" not in fast.data
    ds = _dcmread(fast.data)
    pseudo = Pseudonymizer(KEY)
    assert "ReferencedStudySequence" not in ds and "RequestAttributesSequence" not in ds  # X in Table E.1-1
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == pseudo.uid("1.2.3.4.5.6.98")
    assert ds.ContentSequence == Sequence()
    nested = ds.ReferencedImageSequence[0]
    assert nested.ReferencedSOPInstanceUID == pseudo.uid("1.2.3.4.5.6.7.0")
    assert nested.PurposeOfReferenceCodeSequence[0].CodeValue == "121311"
    assert "CodeMeaning" not in nested.PurposeOfReferenceCodeSequence[0]  # it echoed the patient id
    assert "StudyDescription" not in ds and "ManufacturerModelName" not in ds
    assert ds.Manufacturer == "ACME" and ds.BodyPartExamined == "CHEST"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == fast.result.sop_uid
    private = sorted(int(e.tag) for e in ds.iterall() if e.tag.is_private)
    if option_set == "private":
        assert private == [0x00090010, 0x00091001]  # the allow-listed creator and its element, nothing else
    else:
        assert private == []


def test_the_fast_path_falls_back_where_it_must() -> None:
    pseudo = Pseudonymizer(KEY)
    deflated = get_testdata_file("image_dfl.dcm")
    assert deflated is not None
    data = Path(deflated).read_bytes()
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    cases = {
        "deflated": data,
        "no file meta": _synthetic(ExplicitVRLittleEndian, undefined=False)[132:],
        "truncated": _synthetic(ExplicitVRLittleEndian, undefined=True)[:-7],
    }
    for name, blob in cases.items():
        with pytest.raises(Fallback) as caught:
            deidentify_bytes(blob, pseudo, DeidOptions(), fallback_key="k")
        assert caught.value.reason, name
        assert "Petrova" not in caught.value.reason and "MRN" not in caught.value.reason
    with pytest.raises(Fallback):
        deidentify_bytes(_synthetic(ExplicitVRLittleEndian, undefined=False), pseudo,
                         DeidOptions(clean_descriptors=True), fallback_key="k")


# -- pixel statistics without decoding ---------------------------------------------------------------------------
def test_native_pixel_statistics_match_a_full_decode() -> None:
    compared = 0
    for path in _readable():
        data = path.read_bytes()
        try:
            fast = _fast(data, DeidOptions(), "k")
        except (Fallback, MedcycleError):
            continue
        native = ingest_worker._native_pixels(fast, data)
        if native is None:
            continue
        sample, rescale = native
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
            try:
                full = ingest_worker._decode(ds)
            except Rejected:
                continue
        for mono in (False, True):
            a = pixel_stats(full, bits_stored=12, monochrome1=mono, hounsfield=ds.get("Modality") == "CT")
            b = pixel_stats(sample, bits_stored=12, monochrome1=mono, hounsfield=ds.get("Modality") == "CT",
                            rescale=rescale)
            assert a is not None and b is not None
            assert np.allclose(list(a.to_dict().values()), list(b.to_dict().values()), rtol=1e-9, atol=1e-9), path
        compared += 1
    assert compared >= 40


# -- ingest: both paths make the same catalog ---------------------------------------------------------------------
def _catalog(platform: Platform) -> tuple[list[tuple[Any, ...]], list[Dataset]]:
    """The catalog rows ingest wrote (without object digests) and the stored datasets, in instance order."""
    with platform.session() as s:
        instances = sorted(
            (r.uid, r.digest, r.series_uid, r.photometric, r.bits_stored, r.rows, r.columns, r.frames,
             r.instance_number, r.transfer_syntax, r.sop_class, r.state, r.p01, r.p50, r.p99, r.mean, r.std,
             r.air_fraction, r.saturated_fraction)
            for r in s.scalars(select(InstanceRow))
        )
        series = sorted((r.uid, r.modality, r.body_part, r.manufacturer, r.slice_thickness, r.pixel_spacing_row,
                         r.kvp, r.image_type, r.n_instances) for r in s.scalars(select(SeriesRow)))
        studies = sorted((r.uid, r.patient_id, r.study_date, r.age_band) for r in s.scalars(select(StudyRow)))
    stored = [_dcmread(platform.objects.get(row[1])) for row in instances]
    rows = [(row[0], *row[2:]) for row in instances]  # encodings differ in detail (sequence lengths): so do digests
    return [*rows, *series, *studies], stored


def test_ingest_makes_the_same_catalog_on_either_path(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medcycle.settings import load_settings

    write_ct_series(tmp_path / "in" / "ct", FakePatient(), slices=3, size=16, study_date="20240315")
    first = ingest(platform, [tmp_path / "in"], source="s", jobs=1, actor="test")
    assert first.ingested == 3

    def refuse(*_args: object, **_kwargs: object) -> FastResult:
        raise Fallback("test: the pydicom path")

    monkeypatch.setattr(ingest_worker, "deidentify_bytes", refuse)
    other = Platform(load_settings(home=tmp_path / "home2", environment="development"))
    other.init()
    key_file = other.settings.resolved_deid_key_file
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_bytes(platform.settings.resolved_deid_key_file.read_bytes())
    key_file.chmod(0o600)
    try:
        second = ingest(other, [tmp_path / "in"], source="s", jobs=1, actor="test")
        assert second.ingested == 3
        rows_fast, stored_fast = _catalog(platform)
        rows_slow, stored_slow = _catalog(other)
        assert rows_fast == rows_slow
        for a, b in zip(stored_slow, stored_fast, strict=True):
            assert _differences(a, b) == [] and _differences(a.file_meta, b.file_meta) == []
    finally:
        other.close()


def test_a_fallback_key_given_as_a_function_is_computed_only_for_a_file_without_ids(tmp_path: Path) -> None:
    from medcycle.testing.dicom import write_radiograph

    pseudo = Pseudonymizer(b"k" * 32)
    whole = write_radiograph(tmp_path / "dx.dcm", size=32).read_bytes()
    ds = pydicom.dcmread(io.BytesIO(whole))
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        del ds[keyword]
    buf = io.BytesIO()
    ds.save_as(buf)
    bare = buf.getvalue()
    calls: list[int] = []

    def key() -> str:
        calls.append(1)
        return hashlib.sha256(bare).hexdigest()

    deidentify_bytes(whole, pseudo, fallback_key=key)
    assert calls == []  # a file with its ids never needs the key
    lazy = deidentify_bytes(bare, pseudo, fallback_key=key)
    assert calls == [1]
    eager = deidentify_bytes(bare, pseudo, fallback_key=hashlib.sha256(bare).hexdigest())
    assert lazy.result.patient == eager.result.patient and lazy.data == eager.data
    slow = deidentify(pydicom.dcmread(io.BytesIO(bare)), pseudo, fallback_key=key)  # the pydicom path alike
    assert slow.patient == eager.result.patient and calls == [1, 1]
