"""Evaluation fixtures: the training tests' demo data (made once per session) and their quick configs."""

from tests.training.conftest import demo, loaded, pin_deid_key, run_options  # noqa: F401
