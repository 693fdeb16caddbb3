"""Monitoring fixtures: a calibrated phantom reference (built once), demo data for the served-model tests."""

from __future__ import annotations

import numpy as np
import pytest

from medcycle.monitoring.reference import Policy, Reference, build
from tests.monitoring.phantoms import cases
from tests.training.conftest import demo, pin_deid_key, run_options  # noqa: F401

WINDOW = 16


@pytest.fixture(scope="session")
def phantom_reference() -> Reference:
    """400 no-shift phantom studies, windows of 16, calibrated on 1,500 no-shift windows."""
    return build(cases(400, np.random.default_rng(1)), Policy(window=WINDOW), positive="lesion", null_windows=1500)
