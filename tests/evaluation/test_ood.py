"""The OOD gate: header rules, image statistics calibrated to a false-alarm rate, model scores, the layers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medcycle.errors import ValidationFailed
from medcycle.evaluation import ood
from medcycle.evaluation.metrics import auroc
from medcycle.testing import ood as cases

CHEST_RULES = {"modality": ["CR", "DX"], "body_part": ["CHEST"], "photometric": ["MONOCHROME1", "MONOCHROME2"],
               "view_position": ["PA", "AP"], "allow_missing": ["view_position"]}


@pytest.fixture(scope="module")
def fitted() -> tuple[ood.ImageStatsDetector, list[cases.Case], list[cases.Case]]:
    """A detector fitted on chest images and calibrated to 5% false alarms; held-out chests and OOD cases."""
    train = cases.in_distribution(60, 30, seed=0)
    val = cases.in_distribution(40, 20, seed=100)
    det = ood.ImageStatsDetector.fit([ood.features(c.pixels, monochrome1=c.monochrome1) for c in train])
    det.threshold = ood.calibrate([det.score(ood.features(c.pixels, monochrome1=c.monochrome1)) for c in val], 0.05)
    held_out = cases.in_distribution(40, 20, seed=200)
    out = cases.out_of_distribution(10, 12, seed=300)
    return det, held_out, out


def test_image_statistics_separate_chests_from_everything_else(
        fitted: tuple[ood.ImageStatsDetector, list[cases.Case], list[cases.Case]]) -> None:
    det, held_out, out = fitted
    assert {c.kind for c in out} >= {"tibia", "dicom-other", "canister", "natural"}
    s_in = np.array([det.score(ood.features(c.pixels, monochrome1=c.monochrome1)) for c in held_out])
    s_out = np.array([det.score(ood.features(c.pixels, monochrome1=c.monochrome1)) for c in out])
    y = np.r_[np.zeros(s_in.size), np.ones(s_out.size)].astype(np.int64)
    assert auroc(y, np.r_[s_in, s_out], 0.5) >= 0.95
    assert det.threshold is not None
    assert np.mean(s_out > det.threshold) >= 0.95  # >= 95% of OOD flagged …
    assert np.mean(s_in > det.threshold) <= 0.12  # … at the calibrated 5% (held-out: sampling noise on 60 cases)


def test_no_canister_ever_reaches_the_model(
        fitted: tuple[ood.ImageStatsDetector, list[cases.Case], list[cases.Case]]) -> None:
    det, _held_out, _out = fitted
    gate = ood.OODGate(ood.HeaderRules.from_dict(CHEST_RULES), det)
    for seed in range(1000, 1025):
        case = cases.canister(seed, size=int(np.random.default_rng(seed).choice([128, 256, 384])))
        assert ood.HeaderRules.from_dict(CHEST_RULES).check(case.header) == []  # its header claims a chest …
        decision = gate.check(header=case.header, pixels=case.pixels)
        assert not decision.ok and decision.layer == "image", case.name  # … its pixels give it away
        assert "far from the training images" in decision.reasons[0]


def test_the_cheapest_layer_decides_first_and_says_why(
        fitted: tuple[ood.ImageStatsDetector, list[cases.Case], list[cases.Case]]) -> None:
    det, held_out, out = fitted
    gate = ood.OODGate(ood.HeaderRules.from_dict(CHEST_RULES), det)
    ct = next(c for c in out if c.name == "CT_small.dcm")
    decision = gate.check(header=ct.header, pixels=ct.pixels)
    assert decision.layer == "header" and decision.scores == {}  # refused before the pixels were looked at
    assert any("modality CT is not one the model accepts" in r for r in decision.reasons)
    chest = held_out[0]
    ok = gate.check(header=chest.header, pixels=chest.pixels)
    assert ok.ok and ok.layer is None and "image" in ok.scores
    refused = gate.check(header=chest.header, pixels=chest.pixels, model_scores={"energy": (-1.0, -3.0)})
    assert refused.layer == "model" and "energy score -1.000 is above -3.000" in refused.reasons[0]


def test_gate_round_trips_through_json(
        fitted: tuple[ood.ImageStatsDetector, list[cases.Case], list[cases.Case]]) -> None:
    det, held_out, _out = fitted
    gate = ood.OODGate(ood.HeaderRules.from_dict(CHEST_RULES), det)
    again = ood.OODGate.from_dict(json.loads(json.dumps(gate.to_dict())))
    case = held_out[3]
    a, b = again.check(header=case.header, pixels=case.pixels), gate.check(header=case.header, pixels=case.pixels)
    assert a.ok == b.ok and a.scores["image"] == pytest.approx(b.scores["image"], rel=1e-9)
    assert again.header == gate.header
    with pytest.raises(ValidationFailed, match="incomplete"):
        ood.ImageStatsDetector.from_dict({"mean": [1.0]})


def test_header_rules_ranges_image_type_and_missing_fields() -> None:
    rules = ood.HeaderRules.from_dict({"modality": ["ct"], "slice_thickness_mm": [0.5, 2.5], "rows": [256, 1024],
                                       "image_type_lacks": ["LOCALIZER"], "allow_missing": ["rows"]})
    good = {"Modality": "CT", "SliceThickness": "1.25", "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]}
    assert rules.check(good) == []
    assert rules.check({**good, "SliceThickness": 5}) == ["slice_thickness_mm 5 is outside 0.5-2.5"]
    assert rules.check({**good, "Rows": 128}) == ["rows 128 is outside 256-1024"]
    assert rules.check({**good, "ImageType": "ORIGINAL\\PRIMARY\\LOCALIZER"}) == ["image type has LOCALIZER"]
    assert rules.check({"modality": "CT", "image_type": ["ORIGINAL"]}) == [
        "slice_thickness_mm is missing (the model accepts 0.5-2.5)"]  # snake_case catalog fields work too
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    assert rules.check(ds) == ["slice_thickness_mm 5 is outside 0.5-2.5", "rows 128 is outside 256-1024"]


@pytest.mark.parametrize(("rules", "words"), [
    ({"modalty": ["CT"]}, "unknown rule"),
    ({"modality": "CT"}, "list of text"),
    ({"rows": [10]}, r"\[min, max\]"),
    ({"rows": [100, 10]}, "min <= max"),
    ({"modality": ["CT"], "allow_missing": ["rows"]}, "without a rule"),
])
def test_bad_rule_files_are_refused(rules: dict, words: str) -> None:
    with pytest.raises(ValidationFailed, match=words) as info:
        ood.HeaderRules.from_dict(rules, where="gate.yaml")
    assert "gate.yaml" in info.value.message and info.value.hint


def test_model_scores() -> None:
    confident = np.array([[8.0, 0.0, 0.0]])
    unsure = np.array([[0.1, 0.0, 0.05]])
    assert ood.max_softmax_score(confident)[0] < 0.01 < 0.6 < ood.max_softmax_score(unsure)[0]
    assert ood.energy_score(confident)[0] < ood.energy_score(unsure)[0]
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 1, (100, 8)), rng.normal(6, 1, (100, 8))])
    maha = ood.FeatureMahalanobis.fit(feats, [0] * 100 + [1] * 100)
    near, far = maha.score(rng.normal(6, 1, (20, 8))), maha.score(rng.normal(-8, 1, (20, 8)))
    threshold = ood.calibrate(maha.score(np.concatenate([rng.normal(0, 1, (50, 8)), rng.normal(6, 1, (50, 8))])),
                              0.05)
    assert np.mean(near > threshold) <= 0.2 and np.all(far > threshold)


def test_calibration_needs_enough_cases() -> None:
    assert ood.calibrate(np.arange(100.0), 0.05) == 95.0
    with pytest.raises(ValidationFailed, match="cannot calibrate"):
        ood.calibrate(np.arange(10.0), 0.05)
    with pytest.raises(ValidationFailed, match="not in"):
        ood.calibrate(np.arange(100.0), 1.5)
    with pytest.raises(ValidationFailed, match="at least 10"):
        ood.ImageStatsDetector.fit([np.zeros(87)] * 3)
    with pytest.raises(ValidationFailed, match="shape"):
        ood.features(np.zeros(5))
