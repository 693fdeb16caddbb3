"""Drift detection: thresholds calibrated to the false-alarm budget hold on no-shift windows, injected shifts
page within a few windows, and the paging rule needs persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medcycle.errors import UsageError, ValidationFailed
from medcycle.monitoring.persistence import Persistence
from medcycle.monitoring.reference import Policy, Reference, build, page_probability, per_window_alpha
from medcycle.monitoring.signals import Cases, ks_distance
from tests.monitoring.conftest import WINDOW
from tests.monitoring.phantoms import SHIFTS, Shift, cases


@pytest.fixture
def reference(phantom_reference: Reference) -> Reference:
    return phantom_reference


def test_alpha_follows_the_budget() -> None:
    alpha = per_window_alpha(1e-5, 5, 3, 4)
    assert 5 * page_probability(alpha, 3, 4) == pytest.approx(1e-5, rel=1e-3)
    assert 0.005 < alpha < 0.01
    assert per_window_alpha(1e-5, 5, 1, 1) == pytest.approx(2e-6, rel=1e-3)  # no persistence: a tiny alpha


def test_reference_fits_every_signal_and_round_trips(reference: Reference) -> None:
    assert set(reference.signals) == {"metadata", "intensity", "embedding", "positive_rate", "score"}
    assert all(t > 0 for n, t in reference.thresholds.items() if n != "metadata")
    again = Reference.from_dict(json.loads(json.dumps(reference.to_dict())))
    window = cases(WINDOW, np.random.default_rng(5))
    a, b = reference.evaluate(window), again.evaluate(window)
    assert {n: r.statistic for n, r in a.items()} == pytest.approx({n: r.statistic for n, r in b.items()})


def test_no_shift_stays_within_the_budget_and_injected_shifts_page_fast(reference: Reference) -> None:
    rng = np.random.default_rng(2)
    persistence = Persistence(reference.policy.k, reference.policy.n)
    flags = dict.fromkeys(reference.signals, 0)
    pages = []
    n_windows = 150
    for _ in range(n_windows):
        results = reference.evaluate(cases(WINDOW, rng))
        for name, r in results.items():
            flags[name] += r.drift
        pages += persistence.update({n: r.drift for n, r in results.items()})
    assert pages == []
    # each signal flags about alpha of no-shift windows (about 1 in 150 here); 6 would be far outside sampling noise
    assert all(count <= 6 for count in flags.values()), (flags, reference.alpha)

    for name, shift in SHIFTS.items():
        persistence = Persistence(reference.policy.k, reference.policy.n)
        first = None
        for w in range(8):
            results = reference.evaluate(cases(WINDOW, rng, shift))
            if persistence.update({n: r.drift for n, r in results.items()}) and first is None:
                first = w + 1
        assert first is not None and first <= 5, f"{name} did not page within 5 windows"


def test_a_single_odd_window_does_not_page() -> None:
    p = Persistence(3, 4)
    assert p.update({"x": True}) == [] and p.update({"x": False}) == [] and p.update({"x": True}) == []
    assert p.update({"x": True}) == ["x"]  # 3 of the last 4
    assert p.update({"x": True}) == []  # the same episode
    for _ in range(4):
        p.update({"x": False})
    assert p.quiet("x") and p.update({"x": True}) == []


def test_signal_details_name_what_moved(reference: Reference) -> None:
    rng = np.random.default_rng(9)
    scanner = reference.evaluate(cases(WINDOW, rng, Shift(new_scanner=1.0)))
    meta = scanner["metadata"]
    assert meta.drift and meta.detail["fields"]["device_model"]["unseen"] == ["DR-Nova"]
    blur = reference.evaluate(cases(WINDOW, rng, SHIFTS["blur 1.5"]))["intensity"]
    assert blur.drift and blur.detail["feature"] in ("noise", "edges") and blur.p_value is not None
    assert blur.p_value < reference.alpha


def test_bad_policies_and_small_references_are_refused() -> None:
    with pytest.raises(UsageError):
        Policy(window=4)
    with pytest.raises(UsageError):
        Policy(k=5, n=4)
    with pytest.raises(ValidationFailed) as info:
        build(cases(20, np.random.default_rng(0)), Policy(window=WINDOW))
    assert "--split val,test" in (info.value.hint or "")


def test_ks_distance_matches_scipy() -> None:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=40), rng.normal(0.3, size=300)
    assert ks_distance(a, b) == pytest.approx(ks_2samp(a, b).statistic)
    assert len(Cases.of(cases(3, rng))) == 3
