"""Fixtures for training tests: small demo data (made once), loaded into a test platform; quick configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medcycle.platform import Platform
from medcycle.training.config import TrainingConfig, example, validate
from medcycle.training.demo_data import DemoData, generate, load

THREADS = 1  # the test machines have 2 shared cores: two threads spin against other test runs


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    """96 radiographs (64×64, half with a lesion) and 4 CT volumes (16×32×32), written once per session."""
    return generate(tmp_path_factory.mktemp("demo"), seed=0, radiographs=96, volumes=4, size=64, volume_size=32,
                    slices=16)


DEID_KEY = "5eed" * 16  # a fixed de-identification key: the same pseudonyms, hence the same split, every run


def pin_deid_key(platform: Platform) -> None:
    path = platform.settings.resolved_deid_key_file
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(DEID_KEY + "\n")
    path.chmod(0o600)


@pytest.fixture
def loaded(sqlite_platform: Platform, demo: DemoData) -> dict[str, str]:
    """The demo radiographs ingested into the test platform, frozen as dataset demo-xr@v1."""
    pin_deid_key(sqlite_platform)
    return load(sqlite_platform, demo.root, kinds=("xr",))


@pytest.fixture
def run_options(tmp_path: Path) -> dict[str, Any]:
    """``start_run`` options for quiet, fast test runs."""
    return {"journal_dir": tmp_path / "journals", "resources": False, "capture_output": False, "capture": False,
            "flush_interval": 0.05}


def quick(task: str, *, dataset: str | None = None, path: Path | None = None, **sections: Any) -> TrainingConfig:
    """The example config of ``task`` with one thread and ``sections`` merged in (``training={"epochs": 1}``;
    a list, e.g. ``augment=[]``, replaces the section)."""
    data = example(task, dataset)
    if path is not None:
        data["data"] = {**data["data"], "dataset": None, "path": str(path)}
    data["training"] = {**data["training"], "threads": THREADS}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values} if isinstance(values, dict) else values
    return validate(data)
