"""The Predictor on a real trained model, on the CPU: training preprocessing, alias resolution, OOD gate."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medcycle.models import registry
from medcycle.platform import Platform
from medcycle.serving.predictor import CaseInput, Predictor
from medcycle.serving.schemas import Params
from medcycle.training.data import read_file, read_volume
from tests.serving.core_fixtures import CLS, SEG, SrvTemplate


def test_predictions_equal_the_evaluation_pipeline(srv_platform: Platform) -> None:
    """Same weights, same transforms: serving's probabilities are evaluation's, case by case."""
    from medcycle.evaluation.predict import load, predict
    from medcycle.training.data import index

    folder = next((srv_platform.settings.home / "pulls" / "evaluation").iterdir())
    loaded = load(srv_platform, f"{CLS}@v1")
    expected = {p.key: p.probs for p in predict(loaded, folder, "test")}
    predictor = Predictor.load(srv_platform, CLS, device="cpu", max_batch=7)
    predictor.gate = None  # calibrated to refuse ~10% of in-distribution images; evaluation has no gate
    samples = index(folder, loaded.config).split("test")
    got = predictor.predict([CaseInput(read_volume(s.image)) for s in samples])  # one batch, chunks of 7
    assert len(got) == len(samples) > 7
    for sample, pred in zip(samples, got, strict=True):
        assert pred.status == "ok"
        np.testing.assert_allclose(pred.probabilities[0], expected[sample.key], atol=1e-5)
    assert predictor.ref == f"{CLS}@v1" and predictor.requested == CLS


def test_an_alias_is_resolved_once_at_load(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    with srv_platform.session() as s:
        registry.promote(s, f"{CLS}@v1", "production", force_reason="test", actor="t")
    predictor = Predictor.load(srv_platform, f"{CLS}@production")
    assert predictor.ref == f"{CLS}@v1" and predictor.requested == f"{CLS}@production"
    pixels = read_file(srv_template.radiographs[0])
    strict = predictor.predict([CaseInput(pixels, params=Params(threshold=0.999))])[0]
    loose = predictor.predict([CaseInput(pixels, params=Params(threshold=0.001))])[0]
    assert strict.finding and loose.finding and strict.finding["class"] == "normal" and loose.finding["positive"]
    assert strict.probabilities == loose.probabilities


def test_the_ood_gate_refuses_with_reasons_before_inference(srv_platform: Platform, srv_template: SrvTemplate
                                                            ) -> None:
    predictor = Predictor.load(srv_platform, CLS, header_rules={"modality": ["DX", "CR"], "body_part": ["CHEST"]})
    assert predictor.gate is not None and predictor.gate.image is not None  # from the passing gate report
    assert predictor.gate.image.threshold is not None
    ct_paths = srv_template.ct_series
    ct = CaseInput(read_volume(ct_paths), header=pydicom.dcmread(ct_paths[0], stop_before_pixels=True))
    xr = CaseInput(read_file(srv_template.radiographs[0]),
                   header=pydicom.dcmread(srv_template.radiographs[0], stop_before_pixels=True))
    rng = np.random.default_rng(3)
    photo = CaseInput((rng.random((64, 64)) * 255).astype(np.float32))  # noise: far from any radiograph
    refused_ct, ok, refused_photo = predictor.predict([ct, xr, photo])
    assert refused_ct.status == "refused" and refused_ct.finding is None and not refused_ct.probabilities
    assert refused_ct.ood is not None and refused_ct.ood.layer == "header"
    assert any("modality CT" in r for r in refused_ct.ood.reasons)
    assert ok.status == "ok" and ok.ood is not None and ok.ood.ok and "image" in ok.ood.scores
    assert refused_photo.status == "refused" and refused_photo.ood is not None
    assert refused_photo.ood.layer == "image" and "far from the training images" in refused_photo.ood.reasons[0]


def test_segmentation_masks_lie_on_the_input_grid(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    predictor = Predictor.load(srv_platform, SEG)
    assert predictor.task == "segmentation-2d" and predictor.gate is None
    pixels = read_file(srv_template.radiographs[0])
    series = np.stack([pixels, pixels[::-1]])  # a two-slice "series" for a 2D model: each slice is an image
    one, two = predictor.predict([CaseInput(pixels, spacing=(1.0, 0.5, 0.5)), CaseInput(series,
                                                                                         spacing=(2.0, 0.5, 0.5))])
    assert one.mask is not None and one.mask.shape == pixels.shape and set(np.unique(one.mask)) <= {0, 1}
    assert two.mask is not None and two.mask.shape == series.shape
    np.testing.assert_array_equal(two.mask[0], one.mask)  # batching does not change a case's answer
    lesion = one.measurements["classes"]["lesion"] if one.measurements else {}
    assert lesion["area_mm2"] == pytest.approx(lesion["voxels"] * 0.25)
    assert two.measurements is not None and "volume_mm3" in two.measurements["classes"]["lesion"]


def test_inputs_a_model_cannot_take_are_invalid_without_failing_the_batch(srv_platform: Platform) -> None:
    """A 2D model takes any 2D image or series; a 4D array is reported invalid (with the gate on or off)."""
    predictor = Predictor.load(srv_platform, CLS)
    good = CaseInput(np.zeros((40, 40), np.float32) + np.arange(40, dtype=np.float32))
    bad = CaseInput(np.zeros((2, 2, 8, 8), np.float32))
    gated = predictor.predict([good, bad])[1]
    assert gated.status in {"invalid", "refused"} and gated.finding is None and not gated.probabilities
    predictor.gate = None
    ok, invalid = predictor.predict([good, bad])
    assert ok.status == "ok" and invalid.status == "invalid" and invalid.error and "does not fit" in invalid.error
