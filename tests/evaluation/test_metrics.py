"""Classification metrics: parity with scikit-learn and MONAI, bootstrap intervals, subgroups, paired tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medcycle.errors import ValidationFailed
from medcycle.evaluation import metrics as m


def cases(n: int, *, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and calibrated-ish scores: positives score higher by ``separation`` (on the logit scale)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logits = rng.normal(0, 1, n) + separation * (y - 0.5)
    return y, 1 / (1 + np.exp(-logits))


def test_values_match_scikit_learn_and_hand_counts() -> None:
    from sklearn.metrics import average_precision_score, brier_score_loss, confusion_matrix, roc_auc_score

    y, s = cases(300, separation=2.0, seed=1)
    report = m.evaluate_classification(y, s, threshold=0.4, resamples=0)
    tn, fp, fn, tp = confusion_matrix(y, s >= 0.4).ravel()
    assert report.overall["auroc"].value == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    tied = np.round(s, 1)  # many ties: mid-ranks must give scikit-learn's value
    assert m.auroc(y, tied, 0.5) == pytest.approx(roc_auc_score(y, tied), abs=1e-12)
    assert report.overall["pr_auc"].value == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert report.overall["brier"].value == pytest.approx(brier_score_loss(y, s), abs=1e-12)
    assert report.overall["sensitivity"].value == pytest.approx(tp / (tp + fn))
    assert report.overall["specificity"].value == pytest.approx(tn / (tn + fp))
    assert report.overall["ppv"].value == pytest.approx(tp / (tp + fp))
    assert report.overall["npv"].value == pytest.approx(tn / (tn + fn))
    assert report.overall["accuracy"].value == pytest.approx((tp + tn) / len(y))


def test_ece_matches_monai() -> None:
    import torch
    from monai.metrics import CalibrationErrorMetric

    y, s = cases(500, separation=1.0, seed=2)
    s = np.clip(s * 0.8 + 0.15, 0, 1)  # miscalibrated on purpose
    metric = CalibrationErrorMetric(num_bins=m.ECE_BINS, include_background=True, calibration_reduction="expected",
                                    metric_reduction="mean")
    # MONAI: (batch, channels, spatial...): one channel holding the positive-class probability, cases as pixels.
    metric(y_pred=torch.tensor(s, dtype=torch.float64).reshape(1, 1, -1),
           y=torch.tensor(y, dtype=torch.float64).reshape(1, 1, -1))
    expected = float(metric.aggregate())
    assert m.ece(y, s, 0.5) == pytest.approx(expected, abs=1e-6)
    assert m.ece(y, s, 0.5) > 0.05  # and the miscalibration is seen


def test_bootstrap_interval_is_seeded_contains_the_value_and_narrows_with_more_cases() -> None:
    y, s = cases(200, separation=1.5, seed=3)
    a = m.evaluate_classification(y, s, metrics=["auroc", "sensitivity"], resamples=300, seed=7)
    b = m.evaluate_classification(y, s, metrics=["auroc", "sensitivity"], resamples=300, seed=7)
    assert a.to_dict() == b.to_dict()
    for est in a.overall.values():
        assert est.low <= est.value <= est.high and est.resamples == 300 and est.n == 200
    big = m.evaluate_classification(*cases(3000, separation=1.5, seed=3), metrics=["auroc"], resamples=300)
    assert big.overall["auroc"].high - big.overall["auroc"].low < (a.overall["auroc"].high - a.overall["auroc"].low) / 2


def test_interval_covers_the_population_value_in_most_samples() -> None:
    # AUROC of the generating model, from a very large sample; then 40 small samples: ~95% should cover it.
    y, s = cases(200_000, separation=1.5, seed=4)
    truth = m.auroc(y, s, 0.5)
    covered = 0
    for seed in range(40):
        ys, ss = cases(150, separation=1.5, seed=100 + seed)
        est = m.evaluate_classification(ys, ss, metrics=["auroc"], resamples=200, seed=seed).overall["auroc"]
        covered += est.low <= truth <= est.high
    assert covered >= 33  # 95% nominal; percentile intervals on n=150 run a little narrow


def test_subgroups_show_where_the_model_fails_and_hide_tiny_groups() -> None:
    good_y, good_s = cases(200, separation=4.0, seed=5)
    bad_y, bad_s = cases(200, separation=0.0, seed=6)
    y = np.concatenate([good_y, bad_y, [1, 0, 1]])
    s = np.concatenate([good_s, bad_s, [0.9, 0.1, 0.8]])
    source = ["clinic-a"] * 200 + ["clinic-b"] * 200 + ["clinic-c"] * 3
    sex: list[str | None] = [None] * len(y)
    report = m.evaluate_classification(y, s, metrics=["auroc"], factors={"source": source, "sex": sex},
                                       resamples=100, min_group=10)
    a, b = report.groups["source"]["clinic-a"]["auroc"], report.groups["source"]["clinic-b"]["auroc"]
    assert a.value > 0.9 and b.value < 0.65 and a.low > b.high
    assert report.group_sizes["source"] == {"clinic-a": 200, "clinic-b": 200, "clinic-c": 3}
    assert "clinic-c" not in report.groups["source"]  # too small to report a value
    assert report.groups["sex"] == {} and report.group_sizes["sex"] == {}  # unknown everywhere
    assert report.to_dict()["groups"]["source"]["clinic-a"]["auroc"]["n"] == 200


def test_paired_difference_catches_a_worse_model_and_is_zero_for_the_same_one() -> None:
    y, s = cases(400, separation=3.0, seed=8)
    rng = np.random.default_rng(9)
    worse = np.clip(s + rng.normal(0, 0.35, s.size), 0, 1)
    diff = m.paired_difference("auroc", y, worse, s, resamples=300)
    assert diff.value < 0 and diff.high < 0  # inferior beyond doubt
    same = m.paired_difference("auroc", y, s, s, resamples=50)
    assert same.value == same.low == same.high == 0


def test_operating_point_for_a_target_sensitivity() -> None:
    y, s = cases(500, separation=2.0, seed=10)
    t = m.threshold_for_sensitivity(y, s, 0.9)
    assert m.sensitivity(y, s, t) >= 0.9
    assert m.sensitivity(y, s, np.nextafter(t, 1.0)) < 0.9  # the highest such threshold


def test_summarise_per_case_mean_and_interval() -> None:
    dice = [0.9, 0.8, float("nan"), 0.85, 0.7, 0.95]
    est = m.summarise_per_case(dice, resamples=200)
    assert est.n == 5 and est.value == pytest.approx(0.84) and est.low <= 0.84 <= est.high
    assert math.isnan(m.summarise_per_case([float("nan")]).value)


def test_undefined_metrics_are_nan_not_errors() -> None:
    report = m.evaluate_classification([1, 1, 1], [0.9, 0.8, 0.2], metrics=["auroc", "specificity"], resamples=10)
    assert math.isnan(report.overall["auroc"].value) and report.overall["auroc"].resamples == 0
    assert report.to_dict()["overall"]["specificity"]["value"] is None


@pytest.mark.parametrize(("y", "s", "kwargs", "words"), [
    ([0, 1], [0.1], {}, "equal length"),
    ([0, 2], [0.1, 0.2], {}, "0 and 1"),
    ([0, 1], [0.1, 1.2], {}, "probabilities"),
    ([0, 1], [0.1, float("nan")], {}, "probabilities"),
    ([0, 1], [0.1, 0.9], {"metrics": ["dice"]}, "unknown metric"),
    ([0, 1], [0.1, 0.9], {"alpha": 1.5}, "bootstrap"),
    ([0, 1], [0.1, 0.9], {"factors": {"source": ["a"]}}, "one value per case"),
])
def test_bad_input_is_refused_with_a_hint(y: list[int], s: list[float], kwargs: dict, words: str) -> None:
    with pytest.raises(ValidationFailed, match=words) as info:
        m.evaluate_classification(y, s, **kwargs)
    assert info.value.hint
