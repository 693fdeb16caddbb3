"""Real files through intake, the worker and the outputs: what a radiology AI user sends and what must come back.

pydicom's own test files (a CT series with a gap, a localizer series of three orientations), multi-frame NM
instances, a series holding an image of another size, NIfTI volumes with NaN voxels, RGB or complex voxels or a
side of one voxel, and a PNG one pixel high: each job either gives outputs on the input's geometry or is refused
with a message that names the problem — never a worker failure, a garbage volume or a NaN stored as a finding.

The models are small untrained networks (``tests.serving.helpers.serving_model``): geometry, not accuracy.
"""

from __future__ import annotations

import gzip
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medcycle.errors import ValidationFailed
from medcycle.jobs.base import JobState
from medcycle.platform import Platform
from medcycle.serving import intake
from medcycle.serving.results import find
from medcycle.serving.worker import ServingWorker
from medcycle.testing.platform import make_settings
from tests.serving.helpers import serving_model

SMALL = {"input": {"size": [32, 32], "intensity": {"kind": "percentile", "lower": 1, "upper": 99}},
         "model": {"name": "basic-unet", "width": 4}}
VOLUME = {"input": {"size": [32, 32, 32], "intensity": {"kind": "window", "center": 0, "width": 1000}},
          "model": {"name": "basic-unet", "width": 4}}
CLASSIFIER = {"input": {"size": [32, 32], "intensity": {"kind": "percentile", "lower": 1, "upper": 99}},
              "model": {"name": "tiny-cnn", "width": 4, "depth": 2}}
NM = "1.2.840.10008.5.1.4.1.1.20"


@dataclass
class Env:
    platform: Platform
    tmp: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("inputs-review")
    platform = Platform(make_settings(tmp / "home", auth_enabled=False))
    platform.init()
    serving_model(platform, "seg2", tmp, task="segmentation-2d", classes=("lesion",), seed=3, overrides=SMALL)
    serving_model(platform, "seg3", tmp, task="segmentation-3d", classes=("nodule",), seed=2, overrides=VOLUME)
    serving_model(platform, "cls2", tmp, task="classification-2d", seed=1, overrides=CLASSIFIER)
    try:
        yield Env(platform, tmp)
    finally:
        platform.close()


def _run(env: Env, files: list[Path], model: str) -> dict[str, Any]:
    """Submit ``files`` and let a worker take the job; the job's state and error, and its stored result."""
    job = intake.submit(env.platform, files, model=model)
    worker = ServingWorker(env.platform, max_batch_images=64, max_delay_ms=10, idle_wait_ms=10, prefetch=False)
    try:
        worker.run_once()
    finally:
        worker.close()
    done = env.platform.jobs.get(job.id)
    out: dict[str, Any] = {"state": done.state, "error": done.error, "payload": done.payload, "cases": [],
                           "outputs": []}
    if done.result:
        with env.platform.session(write=False) as session:
            row = find(session, done.result["result"])
            assert row is not None
            out["cases"], out["outputs"] = list(row.cases), list(row.outputs)
    return out


def _output(env: Env, result: dict[str, Any], kind: str, case: int) -> bytes:
    [digest] = [o["digest"] for o in result["outputs"] if o["kind"] == kind and o["case"] == case]
    return env.platform.objects.get(digest)


def _pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    assert found is not None, name
    return Path(str(found))


def _mr(tmp: Path, name: str, *, series: str, position: float, orientation: list[float],
        study: str | None = None) -> Path:
    """pydicom's MR_small as one slice of ``series`` at ``position`` mm along the slice normal."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(_pydicom_file("MR_small.dcm"))
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.ImageOrientationPatient = orientation
    normal = np.cross(orientation[:3], orientation[3:])
    ds.ImagePositionPatient = [float(v) for v in normal * position]
    if study is not None:
        ds.StudyInstanceUID = study
    path = tmp / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _nifti(tmp: Path, name: str, data: np.ndarray[Any, Any], zooms: tuple[float, float, float] = (0.7, 0.8, 3.0)
           ) -> Path:
    import nibabel as nib

    path = tmp / name
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), str(path))  # type: ignore[no-untyped-call]
    return path


# -- DICOM series that do not stack ---------------------------------------------------------------------------
def test_a_series_of_two_orientations_is_a_case_per_orientation_each_on_its_own_grid(env: Env) -> None:
    """Axial slices and sagittal localizer planes in one series were stacked into one 'volume' and given to a 3D
    model as such (a silently wrong mask and volume_mm3); now each orientation is a case with its own grid."""
    import nibabel as nib
    import pydicom
    from pydicom.uid import generate_uid

    tmp = env.tmp / "orient"
    tmp.mkdir()
    series = generate_uid()
    axial = [_mr(tmp, f"ax{k}.dcm", series=series, position=4.0 * k, orientation=[1, 0, 0, 0, 1, 0])
             for k in range(4)]
    sagittal = [_mr(tmp, f"sag{k}.dcm", series=series, position=5.0 * k, orientation=[0, 1, 0, 0, 0, -1])
                for k in range(2)]
    files = [axial[0], sagittal[0], *axial[1:], sagittal[1]]
    got = _run(env, files, "seg3")
    assert got["state"] is JobState.SUCCEEDED, got["error"]
    assert [(c["inputs"], c["images"]) for c in got["payload"]["cases"]] == [([0, 2, 3, 4], 4), ([1, 5], 2)]
    ax, sag = got["cases"]
    assert ax["status"] == "ok" and ax["mask"]["shape"] == [4, 64, 64] and not ax.get("output_problems"), ax
    assert sag["status"] == "ok" and sag["mask"]["shape"] == [2, 64, 64], sag
    # the axial case's mask lies on the axial slices: NIfTI affine and SEG frame positions from their headers
    nii: Any = nib.Nifti1Image.from_bytes(gzip.decompress(_output(env, got, "nifti", 0)))  # type: ignore[no-untyped-call]
    assert nii.shape == (64, 64, 4)
    first = pydicom.dcmread(axial[0])
    dy, dx = (float(v) for v in first.PixelSpacing)
    np.testing.assert_allclose(nii.affine, np.diag([-dx, -dy, 4.0, 1.0]), atol=1e-4)
    seg = pydicom.dcmread(io.BytesIO(_output(env, got, "seg", 0)))
    z = sorted(float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in seg.PerFrameFunctionalGroupsSequence)
    assert set(z) <= {0.0, 4.0, 8.0, 12.0}


def test_a_localizer_series_of_three_planes_is_one_case_per_plane(env: Env) -> None:
    """pydicom's MR localizer series (one slice per orientation): each plane is predicted on its own grid (its
    own NIfTI affine and SEG) rather than stacked with the others on a made-up diagonal."""
    folder = Path(_pydicom_file("CT_small.dcm")).parent / "dicomdirtests" / "98892003" / "MR2"
    localizer = sorted(p for p in folder.iterdir() if p.name in {"4950", "4981", "5011"})
    got = _run(env, localizer, "seg2")
    assert got["state"] is JobState.SUCCEEDED, got["error"]
    assert len(got["payload"]["cases"]) == 3
    for case in got["cases"]:
        assert case["status"] == "ok" and not case.get("output_problems"), case
    assert sorted(o["kind"] for o in got["outputs"] if o["case"] == 0) == ["nifti", "png", "sc", "seg"]


def test_multi_frame_instances_of_one_series_are_cases_of_their_own(env: Env) -> None:
    """Two multi-frame NM instances of one series failed the job in the worker ('the slices of the series
    differ in shape ([(3, 64, 64)])'); each is now a case (a sequence of frames) with its outputs."""
    import pydicom
    from pydicom.uid import generate_uid

    tmp = env.tmp / "frames"
    tmp.mkdir()
    series, files = generate_uid(), []
    for k in range(2):
        ds = pydicom.dcmread(_pydicom_file("MR_small.dcm"))
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = NM
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series
        plane = ds.pixel_array
        ds.NumberOfFrames = 3
        ds.PixelData = np.stack([plane] * 3).tobytes()
        files.append(tmp / f"nm{k}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    got = _run(env, files, "seg2")
    assert got["state"] is JobState.SUCCEEDED, got["error"]
    assert [c["images"] for c in got["payload"]["cases"]] == [3, 3]
    for case in got["cases"]:
        assert case["status"] == "ok" and case["mask"]["shape"] == [3, 64, 64], case
        assert any("multi-frame" in p for p in case["output_problems"] if p.startswith("seg:")), case


def test_an_image_of_another_size_in_a_series_is_a_case_of_its_own(env: Env) -> None:
    """A series with a derived image of another size failed the whole job in the worker; now the slices that
    stack are one case (with their SEG) and the other image another."""
    import pydicom
    from pydicom.uid import generate_uid

    tmp = env.tmp / "sizes"
    tmp.mkdir()
    series = generate_uid()
    slices = [_mr(tmp, f"s{k}.dcm", series=series, position=5.0 * k, orientation=[1, 0, 0, 0, 1, 0])
              for k in range(3)]
    first = pydicom.dcmread(slices[0])
    ct = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName"):
        setattr(ct, keyword, first.data_element(keyword).value)
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ct.save_as(tmp / "other.dcm", enforce_file_format=True)
    got = _run(env, [*slices, tmp / "other.dcm"], "seg2")
    assert got["state"] is JobState.SUCCEEDED, got["error"]
    assert [c["images"] for c in got["payload"]["cases"]] == [3, 1]
    assert [c["mask"]["shape"] for c in got["cases"]] == [[3, 64, 64], [128, 128]]
    assert "seg" in {o["kind"] for o in got["outputs"] if o["case"] == 0}


def test_a_series_with_a_gap_says_why_it_has_no_seg_and_no_placed_nifti(env: Env) -> None:
    """pydicom's CT series with a 200 mm gap: the NIfTI mask falls back to a diagonal affine and there is no
    SEG; the case now says why (the spacing varies), instead of a generic guess and a silent fallback."""
    folder = Path(_pydicom_file("CT_small.dcm")).parent / "dicomdirtests" / "77654033" / "CT2"
    got = _run(env, sorted(folder.iterdir()), "seg2")
    assert got["state"] is JobState.SUCCEEDED, got["error"]
    [case] = got["cases"]
    problems = case["output_problems"]
    assert any(p.startswith("seg: the series has no regular grid: the slice spacing varies") for p in problems)
    assert any(p.startswith("nifti:") and "not placed in patient space" in p for p in problems), problems
    assert {"nifti", "png", "sc"} <= {o["kind"] for o in got["outputs"]}



def test_a_series_with_a_gap_is_no_volume_for_a_3d_model(env: Env) -> None:
    """The same series to a 3D model: stacked as if evenly spaced it would give a mask and volumes in mm³ on a
    grid that is not the patient's; the case is invalid and says why, and no mask is made."""
    folder = Path(_pydicom_file("CT_small.dcm")).parent / "dicomdirtests" / "77654033" / "CT2"
    got = _run(env, sorted(folder.iterdir()), "seg3")
    assert got["state"] is JobState.SUCCEEDED, got["error"]
    [case] = got["cases"]
    assert case["status"] == "invalid", case
    assert "a 3D model needs evenly spaced slices: the slice spacing varies" in case["error"]
    assert not [o for o in got["outputs"] if o["kind"] in {"nifti", "seg"}], got["outputs"]

# -- NIfTI and PNG that are no grey-level image ---------------------------------------------------------------
def test_nan_voxels_are_refused_at_the_door_with_422(env: Env) -> None:
    """A NIfTI with NaN voxels was accepted; a classifier then stored a NaN probability as a *negative* finding
    (score null through the API) and a NaN in the result JSON (which PostgreSQL refuses: a retry loop)."""
    from tests.serving.core_fixtures import srv_client

    volume = np.random.default_rng(0).normal(size=(20, 24, 6)).astype(np.float32)
    volume[0, 0, 0], volume[1, 1, 1] = np.nan, np.inf
    path = _nifti(env.tmp, "nan.nii.gz", volume)
    with pytest.raises(ValidationFailed, match="2 voxels that are not finite"):
        intake.submit(env.platform, [path], model="cls2")
    with srv_client(env.platform) as client, path.open("rb") as fh:
        answer = client.post("/v1/jobs", data={"model": "cls2"},
                             files={"files": ("scan.nii.gz", fh, "application/gzip")})
    assert answer.status_code == 422, answer.text
    assert "scan.nii.gz" in answer.json()["error"]["message"] and "NaN" in answer.json()["error"]["message"]


def test_a_stored_image_with_nan_pixels_fails_its_job_with_the_reason(env: Env, tmp_path: Path) -> None:
    """Defence in depth for objects stored before intake checked (or a DICOM with float pixels): the worker's
    decode refuses non-finite pixels with a message instead of predicting on them."""
    from medcycle.serving.decode import decode_case

    volume = np.ones((8, 9, 4), np.float32)
    volume[2, 2, 2] = np.nan
    digest = env.platform.objects.put(_nifti(tmp_path, "x.nii.gz", volume).read_bytes()).digest
    payload = {"inputs": [digest], "cases": [{"kind": "nifti", "inputs": [0], "images": 4}]}
    with pytest.raises(ValidationFailed, match="1 pixels that are not finite"):
        decode_case(env.platform.objects, payload, 0, tmp_path / "decode")


@pytest.mark.parametrize(("kind", "message"), [("rgb", "RGB voxels"), ("complex", "complex voxels"),
                                               ("thin", "a side of one voxel")])
def test_niftis_that_are_no_grey_image_are_refused_at_the_door(env: Env, tmp_path: Path, kind: str,
                                                               message: str) -> None:
    """An RGB NIfTI was accepted and failed in the worker ('cannot be decoded (DTypePromotionError)'); a complex
    one was predicted on its real part; a 20x1x6 volume failed in the worker: all are now 422 at intake."""
    base = (np.random.default_rng(1).normal(size=(10, 12, 5)) * 50).astype(np.int16)
    if kind == "rgb":
        rgb = np.ascontiguousarray(np.stack([base.astype(np.uint8)] * 3, axis=-1))
        data = rgb.view([("R", "u1"), ("G", "u1"), ("B", "u1")])[..., 0]
    elif kind == "complex":
        data = base.astype(np.complex64)
    else:
        data = base[:, :1, :]
    with pytest.raises(ValidationFailed, match=message):
        intake.submit(env.platform, [_nifti(tmp_path, f"{kind}.nii.gz", data)], model="seg2")


def test_a_png_one_pixel_high_is_refused_at_the_door(env: Env, tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((1, 50), np.uint8)).save(tmp_path / "line.png")
    with pytest.raises(ValidationFailed, match=r"line\.png is 50x1 pixels"):
        intake.submit(env.platform, [tmp_path / "line.png"], model="seg2")


def test_a_nifti_slab_of_one_slice_is_still_an_image(env: Env, tmp_path: Path) -> None:
    """The new checks keep what worked: a (x, y, 1) volume is a 2D image, with its mask on the input's affine."""
    import nibabel as nib

    data = np.random.default_rng(2).normal(size=(20, 24, 1)).astype(np.float32)
    got = _run(env, [_nifti(tmp_path, "slab.nii.gz", data, zooms=(0.5, 0.6, 2.0))], "seg2")
    assert got["state"] is JobState.SUCCEEDED, got["error"]
    nii: Any = nib.Nifti1Image.from_bytes(gzip.decompress(_output(env, got, "nifti", 0)))  # type: ignore[no-untyped-call]
    assert nii.shape[:2] == (20, 24)
    np.testing.assert_allclose(nii.affine, np.diag([0.5, 0.6, 2.0, 1.0]))


# -- the predictor --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["cls2", "seg2"])
def test_non_finite_network_outputs_make_the_case_invalid(env: Env, model: str) -> None:
    """A NaN probability was a negative finding and a NaN logit a mask class; now the case is invalid."""
    import torch

    from medcycle.evaluation.ood import Decision
    from medcycle.serving.predictor import CaseInput, Predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Predictor.load(env.platform, model)
    shape = (len(predictor.classes),) if model == "cls2" else (2, 32, 32)
    logits = torch.full(shape, float("nan"))
    pred = predictor._post(CaseInput(np.zeros((40, 50), np.float32)), Decision(True, None, (), {}), [logits])
    assert pred.status == "invalid" and pred.finding is None and pred.mask is None
    assert pred.error is not None and "not finite" in pred.error


# -- outputs of studies in other character sets ---------------------------------------------------------------
def test_a_seg_is_made_for_a_japanese_study_in_iso_2022() -> None:
    """``\\ISO 2022 IR 87`` (an empty first value: the default repertoire) is how Japanese studies say their
    character sets; highdicom refused the empty value, so such studies got no SEG."""
    import highdicom as hd
    import pydicom

    from medcycle.serving.outputs import dicom_seg

    ds = pydicom.dcmread(_pydicom_file("MR_small.dcm"))
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=山田^太郎"
    mask = np.zeros((1, int(ds.Rows), int(ds.Columns)), dtype=np.uint8)
    mask[0, 10:20, 10:20] = 1
    data = dicom_seg([ds], mask, ["lesion"], model="m", version="v1", key="k" * 16)
    seg = hd.seg.segread(io.BytesIO(data))
    assert list(seg.SpecificCharacterSet) == ["ISO 2022 IR 6", "ISO 2022 IR 87"]
    assert str(seg.PatientName) == "Yamada^Tarou=山田^太郎"
    assert np.array_equal(seg.pixel_array.reshape(mask.shape), mask)
