"""Serving core, pure parts: postprocessing, parameters and keys, input checks (zip bombs, traversal, truncation),
output files (NIfTI, DICOM SEG, secondary capture) and the image-counting batcher on a real queue."""

from __future__ import annotations

import gzip
import io
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from medcycle.errors import ConfigError, PayloadTooLarge, UsageError, ValidationFailed
from medcycle.platform import Platform
from medcycle.serving import outputs, postprocess
from medcycle.serving.batcher import DispatchReason, DynamicBatcher
from medcycle.serving.config import ServingSettings, load_serving_settings
from medcycle.serving.inputs import Upload, cases, materialise, prepare
from medcycle.serving.intake import check_webhook
from medcycle.serving.results import result_key
from medcycle.serving.schemas import OutputKind, Params
from medcycle.testing.dicom import write_ct_series, write_radiograph


# -- postprocessing -------------------------------------------------------------------------------------------
def test_binary_finding_uses_the_threshold_and_names_the_deciding_image() -> None:
    probs = [[0.9, 0.1], [0.35, 0.65], [0.6, 0.4]]
    f = postprocess.classification_finding(probs, ["normal", "lesion"])
    assert f == {"class": "lesion", "positive": True, "positive_class": "lesion", "score": 0.65, "threshold": 0.5,
                 "image": 1}
    strict = postprocess.classification_finding(probs, ["normal", "lesion"], threshold=0.7)
    assert strict["class"] == "normal" and strict["positive"] is False
    multi = postprocess.classification_finding([[0.2, 0.5, 0.3]], ["a", "b", "c"])
    assert multi["class"] == "b" and multi["positive"] is None and "image" not in multi
    with pytest.raises(ValueError, match="do not fit"):
        postprocess.classification_finding([[0.5, 0.5]], ["a", "b", "c"])


def test_mask_is_resized_to_the_input_grid_and_measured_with_spacing() -> None:
    import torch

    logits = torch.zeros((2, 4, 4))
    logits[1, :2, :2] = 5.0  # the top-left quarter is foreground
    mask = postprocess.mask_from_logits(logits, (8, 12))
    assert mask.shape == (8, 12) and mask.dtype == np.uint8
    assert mask[:3, :5].all() and not mask[5:, :].any() and not mask[:, 7:].any()
    two = np.zeros((1, 10, 10), np.uint8)
    two[0, 1:3, 1:3] = 1
    two[0, 6:9, 6:9] = 1
    m = postprocess.measure_mask(two, ["lesion"], (2.0, 0.5, 0.25))
    assert m["classes"]["lesion"] == {"voxels": 13, "components": 2, "fraction": 0.13, "area_mm2": 13 * 0.125}
    vol = postprocess.measure_mask(np.stack([two[0], two[0]]), ["lesion"], (2.0, 0.5, 0.25))
    assert vol["classes"]["lesion"]["volume_mm3"] == 26 * 0.25 and vol["components"] == 2
    assert postprocess.measure_mask(np.zeros((4, 4)), ["x"])["found"] is False


# -- parameters, keys, settings -------------------------------------------------------------------------------
def test_params_are_canonical_and_part_of_the_result_key() -> None:
    a = Params.parse({"outputs": ["png", "nifti", "png"]})
    b = Params.parse('{"outputs": ["nifti", "png"]}')
    assert a == b and a.canonical() == b.canonical() and a.wants(OutputKind.PNG) and not a.wants(OutputKind.SEG)
    digests = ["a" * 64, "b" * 64]
    assert result_key(digests, "v1", a) == result_key(digests, "v1", b)
    assert result_key(digests, "v1", a) != result_key(digests, "v2", a)
    assert result_key(digests, "v1", a) != result_key(digests[::-1], "v1", a)
    assert result_key(digests, "v1", a) != result_key(digests, "v1", Params(threshold=0.3))
    for bad in ({"threshold": 1.5}, {"outputs": ["jpeg"]}, {"colour": 1}, "[1]", "{"):
        with pytest.raises(ValidationFailed) as info:
            Params.parse(bad)  # type: ignore[arg-type]
        assert info.value.hint


def test_serving_settings_layers_and_refuse_bad_rules(platform_settings_home: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from medcycle.testing.platform import make_settings

    settings = make_settings(platform_settings_home)
    (platform_settings_home / "serving.toml").write_text('[serving]\nmax_batch_images = 32\nmax_delay_ms = 20\n')
    monkeypatch.setenv("MEDCYCLE_SERVING_MAX_DELAY_MS", "7")
    monkeypatch.setenv("MEDCYCLE_SERVING_HEADER_RULES", '{"chest": {"modality": ["DX"]}}')
    cfg = load_serving_settings(settings, device="cpu")
    assert (cfg.max_batch_images, cfg.max_delay_ms, cfg.device) == (32, 7, "cpu")
    assert cfg.rules_for("chest") == {"modality": ["DX"]} and cfg.rules_for("other") is None
    monkeypatch.setenv("MEDCYCLE_SERVING_HEADER_RULES", '{"chest": {"modality": "DX"}}')
    with pytest.raises(ConfigError, match="list of text values"):
        load_serving_settings(settings)


@pytest.fixture
def platform_settings_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def test_webhook_urls_are_checked() -> None:
    assert check_webhook("http://127.0.0.1:9/hook") == "http://127.0.0.1:9/hook"
    assert check_webhook(None) is None
    for bad in ("ftp://x/y", "/relative", "http://user:pw@host/x", "javascript:alert(1)"):
        with pytest.raises(UsageError):
            check_webhook(bad)


# -- inputs -------------------------------------------------------------------------------------------------
class _Store:
    """Only what materialise needs for raw files (no stored objects are referenced in these tests)."""

    def get_to_path(self, digest: str, dest: Path) -> None:
        raise AssertionError("no stored object is referenced here")


def _zip(entries: dict[str, bytes], *, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zips_expand_into_series_cases(tmp_path: Path) -> None:
    from medcycle.catalog.deid import Pseudonymizer

    series = write_ct_series(tmp_path / "ct", slices=4, size=32)
    radiograph = write_radiograph(tmp_path / "dx.dcm", size=32)
    archive = _zip({f"study/ct/{p.name}": p.read_bytes() for p in series} | {"__MACOSX/._x": b"junk"})
    work = tmp_path / "work"
    work.mkdir()
    files = materialise([Upload("study.zip", archive), radiograph], work, _Store(), ServingSettings())  # type: ignore[arg-type]
    prepared = [prepare(f, Pseudonymizer(b"k" * 32)) for f in files]
    groups = cases(prepared)
    assert [(c.kind, len(c.inputs), c.images) for c in groups] == [("dicom", 4, 4), ("dicom", 1, 1)]
    for p in prepared:  # de-identified before storing: no original patient name or UIDs left
        ds = pydicom.dcmread(io.BytesIO(p.data or b""))
        assert "PatientName" not in ds or str(ds.PatientName) != "Doe^Jane"
        assert str(ds.StudyInstanceUID) != str(pydicom.dcmread(radiograph).StudyInstanceUID)


def test_an_instance_given_twice_is_one_image_of_its_series(tmp_path: Path) -> None:
    """The same DICOM file twice (in a zip and beside it, or two parts) made a case of 2 images whose volume
    held the same slice twice; one SOP instance is one image, whichever copy comes first."""
    from medcycle.catalog.deid import Pseudonymizer

    series = write_ct_series(tmp_path / "ct", slices=3, size=32)
    again = series[1].read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    given = [Upload("study.zip", _zip({p.name: p.read_bytes() for p in series})), Upload("again.dcm", again),
             Upload("again-2.dcm", again)]
    files = materialise(given, work, _Store(), ServingSettings())  # type: ignore[arg-type]
    prepared = [prepare(f, Pseudonymizer(b"k" * 32)) for f in files]
    assert len(prepared) == 5 and len({p.instance for p in prepared}) == 3
    [case] = cases(prepared)
    assert case.images == 3 and case.inputs == (0, 1, 2)
    # the same bytes as a series of their own: still one image
    [single] = cases([prepare(f, Pseudonymizer(b"k" * 32)) for f in materialise(
        [Upload("a.dcm", again), Upload("b.dcm", again)], work, _Store(), ServingSettings())])  # type: ignore[arg-type]
    assert single.images == 1 and single.inputs == (0,)


@pytest.mark.parametrize(("entries", "error", "words"), [
    ({"../evil.dcm": b"x"}, ValidationFailed, "unsafe name"),
    ({"/abs/evil.dcm": b"x"}, ValidationFailed, "unsafe name"),
    ({"C:/evil.dcm": b"x"}, ValidationFailed, "unsafe name"),
    ({"inner.zip": b"PK"}, ValidationFailed, "not DICOM"),  # a bare "PK" is no zip: refused as no image
    ({"bomb.bin": b"\0" * (3 * 1024 * 1024)}, PayloadTooLarge, "expands more than"),
])
def test_bad_archives_are_refused(entries: dict[str, bytes], error: type[Exception], words: str,
                                  tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()

    def check() -> None:
        for f in materialise([Upload("up.zip", _zip(entries))], work, _Store(), ServingSettings()):  # type: ignore[arg-type]
            prepare(f, None)

    with pytest.raises(error, match=words) as info:
        check()
    assert getattr(info.value, "hint", None)


def test_nested_archives_and_oversized_archives_are_refused(tmp_path: Path) -> None:
    inner = _zip({"a.png": b"x"})
    (tmp_path / "w1").mkdir()
    with pytest.raises(ValidationFailed, match="another archive"):
        materialise([Upload("up.zip", _zip({"inner.zip": inner}))], tmp_path / "w1", _Store(),  # type: ignore[arg-type]
                    ServingSettings())
    (tmp_path / "w2").mkdir()
    big = _zip({"a.bin": bytes(np.random.default_rng(0).integers(0, 255, 200_000, dtype=np.uint8))})
    with pytest.raises(PayloadTooLarge, match="expands to more than"):
        materialise([Upload("up.zip", big)], tmp_path / "w2", _Store(), ServingSettings(zip_max_bytes=100_000))  # type: ignore[arg-type]


def test_broken_files_are_refused_with_their_name(tmp_path: Path) -> None:
    from medcycle.catalog.deid import Pseudonymizer

    good = write_radiograph(tmp_path / "dx.dcm", size=32).read_bytes()
    pseudo = Pseudonymizer(b"k" * 32)
    cases_ = {"truncated.dcm": good[: len(good) - 500], "notes.txt": b"hello, not an image",
              "half.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "bad.nii.gz": gzip.compress(b"not a nifti" * 40)}
    for name, data in cases_.items():
        work = tmp_path / name.replace(".", "_")
        work.mkdir()
        files = materialise([Upload(name, data)], work, _Store(), ServingSettings())  # type: ignore[arg-type]
        with pytest.raises(ValidationFailed) as info:
            prepare(files[0], pseudo)
        assert name in info.value.message and info.value.hint, info.value.message


def test_small_uploads_are_cleaned_in_memory_and_large_streams_go_to_scratch(tmp_path: Path) -> None:
    from medcycle.catalog.deid import Pseudonymizer
    from medcycle.serving import inputs

    pseudo = Pseudonymizer(b"k" * 32)
    dicom = write_radiograph(tmp_path / "dx.dcm", size=64).read_bytes()
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8)).save(buf, "PNG")
    work = tmp_path / "work"
    work.mkdir()
    given = [Upload("dx.dcm", dicom), Upload("stream.dcm", io.BytesIO(dicom)), dicom, Upload("x.png", buf.getvalue())]
    files = materialise(given, work, _Store(), ServingSettings())  # type: ignore[arg-type]
    assert [f.data is not None for f in files] == [True] * 4
    assert list(work.iterdir()) == []  # nothing written for the DICOM files
    prepared = [prepare(f, pseudo) for f in files]
    assert prepared[0].data == prepared[1].data == prepared[2].data  # the same clean bytes, however given
    assert [p.format for p in prepared] == ["dicom", "dicom", "dicom", "png"]
    assert [p.name for p in work.iterdir()] == [files[3].path.name]  # only the PNG, for its reader

    # a stream longer than the in-memory bound is written to scratch as before (and still bounded)
    big = tmp_path / "big"
    big.mkdir()
    small_bound = ServingSettings(max_upload_bytes=len(dicom) + 10)
    old = inputs.IN_MEMORY
    inputs.IN_MEMORY = 1024
    try:
        streamed = materialise([Upload("s.dcm", io.BytesIO(dicom))], big, _Store(), small_bound)  # type: ignore[arg-type]
        assert streamed[0].data is None and streamed[0].path.read_bytes() == dicom
        assert prepare(streamed[0], pseudo).data == prepared[0].data
        too_big = tmp_path / "too-big"
        too_big.mkdir()
        with pytest.raises(PayloadTooLarge, match="larger than"):
            materialise([Upload("t.dcm", io.BytesIO(dicom + b"\0" * 20))], too_big, _Store(), small_bound)  # type: ignore[arg-type]
    finally:
        inputs.IN_MEMORY = old
    # a zip given in memory is written once and expanded as before
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    members = materialise([Upload("a.zip", _zip({"a/dx.dcm": dicom}))], zipped, _Store(), ServingSettings())  # type: ignore[arg-type]
    assert len(members) == 1 and members[0].data is None and prepare(members[0], pseudo).data == prepared[0].data


# -- output files -------------------------------------------------------------------------------------------
def test_nifti_mask_round_trips_through_the_training_reader(tmp_path: Path) -> None:
    from medcycle.training.data import read_nifti

    mask = np.zeros((3, 5, 7), np.uint8)
    mask[1, 2:4, 1:6] = 1
    path = tmp_path / "m.nii.gz"
    path.write_bytes(outputs.nifti_mask(mask, None, (2.0, 0.5, 0.7)))
    assert np.array_equal(read_nifti(path), mask)
    import nibabel as nib

    assert np.allclose(nib.load(str(path)).header.get_zooms(), (0.7, 0.5, 2.0))


def test_dicom_seg_and_secondary_capture_reference_the_source(tmp_path: Path) -> None:
    import highdicom as hd

    series = write_ct_series(tmp_path / "ct", slices=4, size=32)
    datasets = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in series),
                      key=lambda d: float(d.ImagePositionPatient[2]))
    mask = np.zeros((4, 32, 32), np.uint8)
    mask[1:3, 10:20, 12:18] = 1
    data = outputs.dicom_seg(datasets, mask, ["nodule"], model="lungs", version="v3", key="k" * 64)
    seg = hd.seg.segread(io.BytesIO(data))
    back = seg.get_pixels_by_source_instance([str(d.SOPInstanceUID) for d in datasets], segment_numbers=[1],
                                             assert_missing_frames_are_empty=True)
    assert np.array_equal(back[..., 0] != 0, mask == 1)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == datasets[0].SeriesInstanceUID
    assert "lungs@v3" in seg.SoftwareVersions and seg.SegmentSequence[0].SegmentAlgorithmName == "lungs"
    again = outputs.dicom_seg(datasets, mask, ["nodule"], model="lungs", version="v3", key="k" * 64)
    assert pydicom.dcmread(io.BytesIO(again)).SOPInstanceUID == seg.SOPInstanceUID  # same result, same UID
    rgb = outputs.overlay_rgb(np.random.default_rng(0).normal(size=(4, 32, 32)).astype(np.float32), mask, "x")
    sc = pydicom.dcmread(io.BytesIO(outputs.dicom_sc(datasets[1], rgb, model="lungs", version="v3", key="k",
                                                     description="segmentation")))
    assert sc.StudyInstanceUID == datasets[1].StudyInstanceUID and sc.PatientID == datasets[1].PatientID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == datasets[1].SOPInstanceUID
    assert sc.pixel_array.shape == rgb.shape and "lungs@v3" in sc.SoftwareVersions


# -- the batcher -----------------------------------------------------------------------------------------------
def test_batches_count_images_not_requests(sqlite_platform: Platform) -> None:
    jq = sqlite_platform.jobs
    for images in (3, 3, 3, 3):
        jq.enqueue("batch-test", {"images": images})
    batcher = DynamicBatcher(jq, "batch-test", "w", max_images=8, max_delay_ms=30, idle_wait_ms=10)
    first = batcher.next_batch()
    assert first is not None and (len(first.jobs), first.images, first.reason) == (3, 9, DispatchReason.FULL)
    second = batcher.next_batch()
    assert second is not None and (len(second.jobs), second.images, second.reason) == (1, 3, DispatchReason.TIMEOUT)
    assert second.gathered_s >= 0.025  # waited for more, at most the delay
    assert batcher.next_batch() is None
    m = batcher.metrics
    assert m.value("medcycle_serving_dispatch_total", {"reason": "full"}) == 1
    assert m.value("medcycle_serving_dispatch_total", {"reason": "timeout"}) == 1
    assert m.value("medcycle_serving_batch_images_sum") == 12
    assert m.value("medcycle_serving_queue_wait_seconds_count") == 4


def test_a_result_is_stored_once_per_key(platform: Platform) -> None:
    """``ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL: the second write of a key changes nothing."""
    from medcycle.serving import results
    from medcycle.serving.tables import ServingResultRow
    from medcycle.store.base import utcnow

    digest = platform.objects.put(b"an output").digest

    def row(job: str) -> ServingResultRow:
        return ServingResultRow(key="f" * 64, status="done", model="m", model_version_id="v" * 32, model_ref="m@v1",
                                weights_digest="0" * 64, task="classification-2d", inputs_digest="1" * 64, params={},
                                images=1, cases=[{"index": 0}], job_id=job, created_at=utcnow(),
                                outputs=[{"kind": "png", "digest": digest, "media_type": "image/png"}])

    with platform.session() as s:
        assert results.save(s, row("first"))
    with platform.session() as s:
        assert not results.save(s, row("second"))
    with platform.session(write=False) as s:
        stored = results.find(s, "f" * 64)
        assert stored is not None and stored.job_id == "first" and results.count(s) == 1


def test_a_header_spacing_of_zero_or_garbage_is_unknown() -> None:
    from pydicom import Dataset

    from medcycle.serving.decode import _header_spacing

    def ds(**attrs: Any) -> Dataset:
        d = Dataset()
        for k, v in attrs.items():
            setattr(d, k, v)
        return d

    assert _header_spacing(ds(PixelSpacing=[0.5, 0.25], SliceThickness=2)) == (2.0, 0.5, 0.25)
    assert _header_spacing(ds(ImagerPixelSpacing=[0.2, 0.2])) == (1.0, 0.2, 0.2)
    assert _header_spacing(ds(PixelSpacing=[0.5, 0.5], SliceThickness=0)) == (1.0, 0.5, 0.5)
    for bad in ([0, 0], [0.5, 0], [-1, 1], [0.5]):
        assert _header_spacing(ds(PixelSpacing=bad)) is None, bad
    with warnings.catch_warnings():  # pydicom warns when such a value is set; a worker reads it with warnings off
        warnings.simplefilter("ignore")
        assert _header_spacing(ds(PixelSpacing="nan\\0.5")) is None
    assert _header_spacing(ds()) is None
