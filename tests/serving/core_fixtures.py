"""Fixtures of the serving-core tests (imported explicitly by each test module; names start with ``srv_``).

``srv_template`` (session): the demo radiographs ingested, a tiny CNN classifier (``chest``) and a tiny U-Net
(``lesion-seg``) trained on them and registered, and the classifier evaluated with the OOD suite so its
passing gate report carries a calibrated image-statistics detector. It is built once (about half a minute
on two cores); ``srv_platform`` gives each test its own copy of that home, so tests never see each other's
jobs or results.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from medcycle.platform import Platform
from medcycle.testing.platform import make_settings
from medcycle.training.demo_data import DemoData
from tests.training.conftest import pin_deid_key

CLS, SEG = "chest", "lesion-seg"


@dataclass(frozen=True)
class SrvTemplate:
    home: Path
    demo: DemoData
    radiographs: list[Path]  # test-split DICOM files (identified, as a hospital sends them) the OOD gate accepts
    ct_series: list[Path]  # one CT series, one file per slice
    test_pngs: list[Path]  # PNG renderings of test radiographs the OOD gate accepts


def _config(task: str, dataset: str, **model: Any) -> Any:
    from medcycle.training.config import example, validate

    data = example(task, dataset)
    data["training"] = {**data["training"], "threads": 1, "epochs": 4 if task.startswith("class") else 2,
                        "early_stopping": None}
    data["model"] = model
    data["input"] = {**data["input"], "size": [32, 32]}
    return validate(data)


@pytest.fixture(scope="session")
def srv_template(demo: DemoData, tmp_path_factory: pytest.TempPathFactory) -> SrvTemplate:
    from medcycle.evaluation.policy import parse
    from medcycle.evaluation.run import evaluate
    from medcycle.models import registry
    from medcycle.training.demo_data import load
    from medcycle.training.trainers import train_version

    root = tmp_path_factory.mktemp("serving-template")
    platform = Platform(make_settings(root / "home"))
    platform.init()
    pin_deid_key(platform)
    options = {"journal_dir": root / "journals", "resources": False, "capture_output": False, "capture": False,
               "flush_interval": 0.05}
    try:
        refs = load(platform, demo.root, kinds=("xr",))
        data = refs["demo-xr"]
        for name, cfg in ((CLS, _config("classification-2d", data, name="tiny-cnn", width=8, depth=2)),
                          (SEG, _config("segmentation-2d", data, name="basic-unet", width=4))):
            result = train_version(platform, cfg, dataset=data, run_options=options)
            with platform.session() as s:
                registry.register(s, platform.objects, name, run_id=result.run_id)
        policy = parse({"bootstrap": {"resamples": 50}, "ood": {"false_alarm_rate": 0.1, "max_false_alarms": 0.6}},
                       "serving-test.yaml")
        report = evaluate(platform, f"{CLS}@v1", data, policy)
        assert report.passed, [g.to_dict() for g in report.gates if not g.passed]
    finally:
        platform.close()
    xr = [demo.root / s.image[0] for s in demo.studies if s.kind == "xr" and s.split == "test"]
    pngs = [_png_of(path, root / f"xr-{k}.png") for k, path in enumerate(xr[:12])]
    accepted = _accepted(root / "home", [*xr, *pngs])  # tests that want findings use what the gate lets through
    ct = next(s for s in demo.studies if s.kind == "ct")
    return SrvTemplate(root / "home", demo, [p for p in xr if p in accepted], [demo.root / p for p in ct.image],
                       [p for p in pngs if p in accepted])


def _accepted(home: Path, paths: list[Path]) -> set[Path]:
    from medcycle.serving.predictor import CaseInput, Predictor
    from medcycle.training.data import read_file

    platform = Platform(make_settings(home))
    try:
        predictor = Predictor.load(platform, CLS)
        return {p for p in paths if predictor.check(CaseInput(read_file(p))).ok}
    finally:
        platform.close()


def _png_of(dicom: Path, dest: Path) -> Path:
    import numpy as np
    from PIL import Image

    from medcycle.training.data import read_file

    arr = read_file(dicom)
    lo, hi = np.percentile(arr, [1, 99])
    Image.fromarray((np.clip((arr - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)).save(dest)
    return dest


def srv_copy(template: SrvTemplate, dest: Path, **settings: Any) -> Platform:
    """A platform on a copy of the template's home (settings overrides as for ``make_settings``)."""
    home = dest / "home"
    shutil.copytree(template.home, home)
    platform = Platform(make_settings(home, **settings))
    platform.migrate()
    return platform


@pytest.fixture
def srv_platform(srv_template: SrvTemplate, tmp_path: Path) -> Iterator[Platform]:
    platform = srv_copy(srv_template, tmp_path, auth_enabled=False)
    try:
        yield platform
    finally:
        platform.close()


def srv_client(platform: Platform, cfg: Any = None) -> Any:
    """A TestClient of the API with the inference router (and ``cfg`` as its serving settings)."""
    from fastapi.testclient import TestClient

    from medcycle.api.app import create_app
    from medcycle.api.routers import inference

    app = create_app(platform, web=False)
    if not any(getattr(r, "path", "") == "/v1/jobs" for r in app.routes):
        app.include_router(inference.router)
    if cfg is not None:
        app.state.serving_settings = cfg
    return TestClient(app)


@contextmanager
def srv_worker_thread(platform: Platform, **options: Any) -> Iterator[Any]:
    """A :class:`ServingWorker` looping in a thread until the block ends."""
    from medcycle.serving.worker import ServingWorker

    options.setdefault("idle_wait_ms", 50)
    worker = ServingWorker(platform, **options)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the worker thread did not stop"
