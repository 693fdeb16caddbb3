"""examples/pipelines: freeze a dataset → train → evaluate, run for real on the local executor."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medcycle.datasets import versions
from medcycle.datasets.items import add_items, create_dataset
from medcycle.experiments import runs
from medcycle.pipelines.executors import LocalExecutor
from medcycle.pipelines.runner import run_pipeline
from medcycle.pipelines.spec import load_pipeline
from medcycle.pipelines.state import RunDetail, RunStatus
from medcycle.platform import Platform
from medcycle.testing.catalog import make_catalog
from tests.pipelines.conftest import states

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipelines" / "pipeline.yaml"


def _catalog(platform: Platform, seed: int) -> None:
    with platform.session() as s:
        make_catalog(s, sources=1, patients=3, studies_per_patient=1, series_per_study=1, instances_per_series=2,
                     objects=platform.objects, seed=seed)


@pytest.mark.slow
def test_the_example_freezes_trains_and_evaluates_then_reruns_only_on_new_data(
    sqlite_platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    trace = tmp_path / "trace.txt"
    monkeypatch.setenv("PIPELINE_TRACE", str(trace))
    platform = sqlite_platform
    _catalog(platform, 1)
    with platform.session() as s:
        create_dataset(s, "demo-xr", query="")

    def run(**kwargs: object) -> RunDetail:
        detail = run_pipeline(platform, load_pipeline(EXAMPLE, **kwargs),  # type: ignore[arg-type]
                              executor=LocalExecutor(platform))
        assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
        return detail

    def executed() -> list[str]:
        lines = trace.read_text().split()
        trace.write_text("")
        return lines

    first = run()
    assert states(first) == {"freeze": "succeeded", "train": "succeeded", "evaluate": "succeeded"}
    assert executed() == ["freeze", "train", "evaluate"]
    with platform.session(write=False) as s:
        v1 = versions.resolve(s, "demo-xr@latest").id
    frozen = json.loads(platform.objects.get(first.step("freeze").outputs["version"]["digest"]))
    assert frozen == {"dataset": "demo-xr", "version": v1, "items": 6}
    tracked = first.step("train").tracked_run_id  # train.py tracks itself with start_run; the step links it
    assert tracked is not None and first.step("evaluate").tracked_run_id is None
    with platform.session(write=False) as s:
        run_detail = runs.get_run(s, tracked)
    assert run_detail.summary.dataset_digest == v1 and run_detail.metrics["mean"].count == 3
    assert run_detail.summary.tags["task_id"] == f"{first.run.id}.train"
    metrics = json.loads(platform.objects.get(first.step("evaluate").outputs["metrics"]["digest"]))
    assert metrics["version"] == v1 and metrics["n"] == 6 and 0.0 <= metrics["within"] <= 1.0

    # unchanged data: the freeze step (cache: false) runs and finds the same version; the rest are cache hits
    second = run()
    assert states(second) == {"freeze": "succeeded", "train": "cached", "evaluate": "cached"}
    assert second.step("train").tracked_run_id == tracked  # a cache hit links the run that made its outputs
    assert executed() == ["freeze"]
    # a param only evaluate reads
    assert states(run(params={"tolerance": 0.5})) == {"freeze": "succeeded", "train": "cached",
                                                      "evaluate": "succeeded"}
    assert executed() == ["freeze", "evaluate"]

    _catalog(platform, 2)  # new images join the working set: the freeze makes v2 and everything after re-runs
    with platform.session() as s:
        add_items(s, "demo-xr", query="")
    third = run()
    assert states(third) == {"freeze": "succeeded", "train": "succeeded", "evaluate": "succeeded"}
    assert executed() == ["freeze", "train", "evaluate"]
    v2 = third.step("train").inputs["datasets"]["demo-xr"]["version"]
    assert v2 != v1 and json.loads(platform.objects.get(third.step("evaluate").outputs["metrics"]["digest"]))[
        "version"] == v2
