"""The prediction log: what serving records, what it keeps (no patient data), retention."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pydicom
import pytest

from medcycle.errors import UsageError, ValidationFailed
from medcycle.monitoring import log
from medcycle.monitoring.describe import header_fields, image_statistics, mask_summary
from medcycle.monitoring.log import Outcome, PredictionRecord
from medcycle.platform import Platform
from medcycle.store.base import utcnow
from medcycle.testing.dicom import FakePatient, base_dataset

PATIENT = FakePatient(name="Doe^Jane", patient_id="MRN-0012345", sex="F", accession="ACC-777",
                      birth_date="19700102")


def dicom_header() -> pydicom.Dataset:
    from pydicom.uid import DigitalXRayImageStorageForPresentation

    ds = base_dataset(PATIENT, "DX", DigitalXRayImageStorageForPresentation, "1.2.3.4.5", "1.2.3.4.6", "20240105")
    ds.Manufacturer, ds.ManufacturerModelName, ds.BodyPartExamined, ds.ViewPosition = "Acme", "DR-1", "CHEST", "PA"
    ds.Rows, ds.Columns, ds.BitsStored = 64, 64, 12
    ds.ImagerPixelSpacing = ["0.15", "0.15"]
    return ds


def test_header_fields_keep_acquisition_facts_and_drop_patient_data() -> None:
    fields = header_fields(dicom_header())
    assert fields["manufacturer"] == "Acme" and fields["device_model"] == "DR-1" and fields["modality"] == "DX"
    assert fields["imager_pixel_spacing_mm"] == [0.15, 0.15] and fields["rows"] == 64
    text = repr(fields)
    for secret in ("Doe", "Jane", "MRN-0012345", "ACC-777", "19700102", "1.2.3.4.5", "20240105"):
        assert secret not in text
    assert header_fields({"PatientName": "Doe^Jane", "modality": "CT"}) == {"modality": "CT"}


def test_image_statistics_and_mask_summary() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(1000, 50, (64, 64))
    stats = image_statistics(img, bits_stored=12)
    assert stats["p01"] < stats["p50"] < stats["p99"] and stats["noise"] > 0.05
    blurred = image_statistics(np.asarray(__import__("scipy.ndimage").ndimage.gaussian_filter(img, 1.5)))
    assert blurred["noise"] < stats["noise"] / 3  # blur is visible in the texture measure
    mask = np.zeros((10, 10), np.uint8)
    mask[1:3, 1:3] = 1
    mask[6:9, 6:9] = 1
    area, parts = mask_summary(mask)
    assert area == pytest.approx(13 / 100) and parts == 2


def test_record_keeps_the_summary_and_no_patient_data(sqlite_platform: Platform) -> None:
    digest = "a" * 64
    rec = PredictionRecord(model_version="nodules@v1", job_id="job-1", source="clinic-a", header=dicom_header(),
                           input_digests=[digest], input_stats={"p50": 10.0, "bad": float("nan")},
                           ood_score=1.5, ood_ok=True, probabilities={"normal": 0.2, "lesion": 0.8},
                           embedding=np.arange(8.0), latency_ms=12.5)
    with sqlite_platform.session() as s:
        rid = log.record(s, rec)
        failed = log.record(s, PredictionRecord(
            model_version="nodules@v1", outcome="error", error_class="DecodeError",
            error_message="cannot read PatientName=Doe^Jane, id 0012345678 study 1.2.840.1234.5.6"))
    with sqlite_platform.session(write=False) as s:
        row = log.get(s, rid)
        assert row.model == "nodules" and row.model_version_id is None  # not registered: still logged
        assert row.score == 0.8 and row.predicted == "lesion" and row.manufacturer == "Acme"
        assert row.input_stats == {"p50": 10.0} and row.outcome == "ok" and row.latency_ms == 12.5
        emb = log.decode_embedding(row.embedding)
        assert emb is not None and emb.tolist() == list(range(8))
        assert "Doe" not in repr(row.header)
        err = log.get(s, failed)
        assert err.outcome == "error" and err.error_message is not None
        for secret in ("Doe", "Jane", "0012345678", "1.2.840.1234.5.6"):
            assert secret not in err.error_message
        assert [r.id for r in log.recent(s, outcome="error")] == [failed]


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"model_version": ""}, UsageError),
    ({"model_version": "nodules@production"}, UsageError),  # aliases are resolved before logging
    ({"model_version": "n@v1", "outcome": "exploded"}, UsageError),
    ({"model_version": "n@v1", "input_digests": ["nope"]}, ValidationFailed),
    ({"model_version": "n@v1", "probabilities": {"a": 1.5}}, ValidationFailed),
    ({"model_version": "n@v1", "mask_area": 2.0}, ValidationFailed),
    ({"model_version": "n@v1", "latency_ms": float("inf")}, ValidationFailed),
    ({"model_version": "n@v1", "embedding": [float("nan")]}, ValidationFailed),
])
def test_bad_records_are_refused_with_a_hint(sqlite_platform: Platform, kwargs: dict[str, object],
                                             error: type[Exception]) -> None:
    with sqlite_platform.session() as s, pytest.raises(error) as info:
        log.record(s, PredictionRecord(**kwargs))  # type: ignore[arg-type]
    assert info.value.hint  # type: ignore[attr-defined]


def test_purge_keeps_the_retention_period(sqlite_platform: Platform) -> None:
    now = utcnow()
    with sqlite_platform.session() as s:
        for days in (1, 30, 100, 400):
            log.record(s, PredictionRecord(model_version="m@v1", outcome=Outcome.OK, at=now - timedelta(days=days)))
    with sqlite_platform.session() as s:
        assert log.purge(s, older_than_days=90, now=now) == 2
        assert len(log.recent(s)) == 2
        with pytest.raises(UsageError):
            log.purge(s, older_than_days=0)
