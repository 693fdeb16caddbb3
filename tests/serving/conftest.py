"""Fixtures of tests/serving. Serving core: ``srv_*`` (defined in ``core_fixtures.py``); the demo data is the
training tests' (made once per session)."""

from tests.serving.core_fixtures import srv_platform, srv_template  # noqa: F401
from tests.training.conftest import demo  # noqa: F401
