"""What ``medcycle deploy`` checks of the versions it names before any process starts (``check_refs``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from medcycle.errors import UsageError
from medcycle.models import registry
from medcycle.platform import Platform
from medcycle.serving.deploy import DeploymentSpec, check_refs
from medcycle.testing.platform import make_settings
from tests.serving.helpers import serving_model


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """xr@v1, xr@v2 (classifiers, production → v1), lungs@v1 (a 2D segmentation), xr2@v1 (another classifier)."""
    tmp = tmp_path_factory.mktemp("refs")
    platform = Platform(make_settings(tmp / "home"))
    platform.init()
    serving_model(platform, "xr", tmp / "v1", seed=1)
    serving_model(platform, "xr", tmp / "v2", seed=2)
    serving_model(platform, "lungs", tmp / "seg", task="segmentation-2d", classes=("background", "lung"))
    serving_model(platform, "xr2", tmp / "other", seed=3)
    with platform.session() as session:
        registry.promote(session, "xr@v1", "production", force_reason="test")
    try:
        yield platform
    finally:
        platform.close()


def test_a_canary_of_the_served_version_is_refused(platform: Platform) -> None:
    # the alias resolves to the version named as candidate: every "canary" job would run on the primary
    with pytest.raises(UsageError, match="version already served") as caught:
        check_refs(platform, DeploymentSpec(model="xr@production", canary_percent=10, candidate="xr@v1"))
    assert "--canary 0" in (caught.value.hint or "")
    assert check_refs(platform, DeploymentSpec(model="xr@production", canary_percent=10, candidate="xr@v2")) == {
        "xr@production": "xr@v1", "xr@v2": "xr@v2"}


def test_a_shadow_of_another_task_is_refused_another_model_of_the_task_is_not(platform: Platform) -> None:
    with pytest.raises(UsageError, match="segmentation-2d model and xr@v1 a classification-2d one"):
        check_refs(platform, DeploymentSpec(model="xr@production", shadow="lungs@v1"))
    # a classifier under another name is a fair shadow: its findings compare with the served ones
    assert check_refs(platform, DeploymentSpec(model="xr@production", shadow="xr2@v1"))["xr2@v1"] == "xr2@v1"
    with pytest.raises(UsageError, match="the version already served"):
        check_refs(platform, DeploymentSpec(model="xr@production", shadow="xr@v1"))


def test_the_spec_refuses_a_candidate_of_another_model(platform: Platform) -> None:
    with pytest.raises(UsageError, match="a version of the deployed model"):
        DeploymentSpec(model="xr@production", canary_percent=10, candidate="xr2@v1")
