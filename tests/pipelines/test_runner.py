"""Running pipelines on the local executor: what executes, what is a cache hit, what is recorded.

Executions are counted from the trace file every step script appends to (a real process ran), never from
the runner's own bookkeeping.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from medcycle.auth import audit
from medcycle.datasets import versions
from medcycle.datasets.items import add_items, create_dataset
from medcycle.errors import UsageError
from medcycle.objects.tables import ObjectRefRow
from medcycle.pipelines.executors import LocalExecutor
from medcycle.pipelines.runner import StepEvent, run_pipeline
from medcycle.pipelines.spec import load_pipeline, parse_pipeline
from medcycle.pipelines.state import RunStatus, get_run, list_runs
from medcycle.pipelines.tables import StepCacheRow
from medcycle.platform import Platform
from medcycle.testing.catalog import make_catalog
from tests.pipelines.conftest import STEP_PY, Project, states

ALL_EXECUTED = {"prepare": "succeeded", "train": "succeeded", "evaluate": "succeeded", "report": "succeeded"}
ALL_CACHED = {"prepare": "cached", "train": "cached", "evaluate": "cached", "report": "cached"}


def test_first_run_executes_everything_and_a_rerun_is_all_cache_hits(project: Project) -> None:
    events: list[StepEvent] = []
    first = project.run(on_event=events.append)
    assert first.run.status is RunStatus.SUCCEEDED and first.run.error is None
    assert states(first) == ALL_EXECUTED
    assert sorted(project.executed()) == ["evaluate", "prepare", "report", "train"]
    assert [(e.step, e.state.value) for e in events if e.step == "train"] == [("train", "running"),
                                                                             ("train", "succeeded")]
    # outputs are stored by digest and are what the command wrote
    model = first.step("train").outputs["model"]
    written = project.platform.objects.get(model["digest"]).decode()
    assert model["path"] == "model.txt" and written.startswith("train\n") and "--lr=0.1" in written
    assert "SCAN-1" not in written and "scan-1" in written  # the prepared input, placed for train to read
    assert first.step("train").inputs["steps"] == {"prepare.prepared": first.step("prepare").outputs["prepared"]
                                                   ["digest"]}
    assert first.step("train").command[4] == "inputs/prepare/out/prepared.txt"
    assert first.step("report").log_digest is not None
    log = project.platform.objects.get(first.step("report").log_digest or "").decode()
    assert "report wrote report.txt" in log

    second = project.run()
    assert states(second) == ALL_CACHED and second.run.status is RunStatus.SUCCEEDED
    assert project.executed() == []  # zero executions
    for a, b in zip(first.steps, second.steps, strict=True):
        assert (a.name, a.cache_key, a.outputs) == (b.name, b.cache_key, b.outputs) and b.cache_hit
    with project.platform.session(write=False) as s:
        assert s.get_one(StepCacheRow, second.step("train").cache_key).hits == 1
        events_logged = audit.query(s, action="pipeline.run")
    assert len(events_logged) == 2


def test_a_changed_input_file_reruns_exactly_its_dependants(project: Project) -> None:
    project.run()
    project.executed()
    (project.root / "data.txt").write_text("scan-1\nscan-2\nscan-3\n")
    run = project.run()
    assert states(run) == {**ALL_EXECUTED, "report": "cached"}
    assert sorted(project.executed()) == ["evaluate", "prepare", "train"]
    # and back to the first content: everything is in the cache again
    (project.root / "data.txt").write_text("scan-1\nscan-2\n")
    assert states(project.run()) == ALL_CACHED and project.executed() == []
    # a change in the other branch's file re-runs only that branch
    (project.root / "notes.txt").write_text("one more note\n")
    assert states(project.run()) == {**ALL_CACHED, "report": "succeeded"}
    assert project.executed() == ["report"]


def test_a_changed_param_reruns_only_the_steps_that_use_it(project: Project) -> None:
    project.run()
    project.executed()
    run = project.run(params={"lr": 0.01})
    assert states(run) == {"prepare": "cached", "report": "cached", "train": "succeeded", "evaluate": "succeeded"}
    assert sorted(project.executed()) == ["evaluate", "train"]
    assert run.step("train").inputs["params"] == {"lr": 0.01, "seed": 7}
    assert states(project.run(params={"epochs": 9})) == ALL_CACHED  # no step references epochs
    assert project.executed() == []


def test_a_step_rerun_that_writes_the_same_bytes_does_not_rerun_its_dependants(project: Project) -> None:
    project.run()
    project.executed()
    run = project.run(force=["prepare"])
    assert states(run) == {**ALL_CACHED, "prepare": "succeeded"}
    assert project.executed() == ["prepare"] and run.step("prepare").forced and run.run.forced == ["prepare"]
    run = project.run(force=["*"])
    assert states(run) == ALL_EXECUTED and len(project.executed()) == 4
    with pytest.raises(UsageError, match="no step 'nope'") as err:
        project.run(force=["nope"])
    assert "prepare" in (err.value.hint or "")


def test_a_failed_step_skips_its_dependants_and_a_rerun_resumes_from_the_cache(project: Project) -> None:
    (project.root / "fail-train").write_text("")
    (project.root / "pipeline.yaml").write_text(project.file.read_text().replace(
        "      params: {seed: 7}\n", "      params: {seed: 7}\n      files: [fail-*]\n"))
    failed = project.run()
    assert failed.run.status is RunStatus.FAILED
    assert states(failed) == {"prepare": "succeeded", "report": "succeeded", "train": "failed", "evaluate": "skipped"}
    assert sorted(project.executed()) == ["prepare", "report", "train"]
    train = failed.step("train")
    assert train.exit_code == 3 and "exit code 3" in (train.error or "") and "failing on purpose" in (train.error or "")
    assert failed.step("evaluate").error == "not run: 'train' failed" and failed.step("evaluate").cache_key is None
    assert (failed.run.error or "").startswith("step 'train' failed: exit code 3")

    (project.root / "fail-train").unlink()
    (project.root / "pipeline.yaml").write_text(project.file.read_text().replace("files: [fail-*]", "files: []"))
    fixed = project.run()
    assert fixed.run.status is RunStatus.SUCCEEDED
    assert states(fixed) == {"prepare": "cached", "report": "cached", "train": "succeeded", "evaluate": "succeeded"}
    assert sorted(project.executed()) == ["evaluate", "train"]


def test_missing_outputs_timeouts_and_unknown_programs_fail_the_step(project: Project, tmp_path: Path) -> None:
    text = """
pipeline: broken
steps:
  - name: lazy
    command: [python, -c, "print('wrote nothing')"]
    outputs: {x: x.txt}
  - name: slow
    command: [python, -c, "import time; time.sleep(30)"]
    timeout: 0.5
  - name: missing
    command: [no-such-program-xyz]
  - name: after
    command: [python, -c, "pass"]
    needs: [lazy]
"""
    spec = parse_pipeline(text, base=project.root)
    run = run_pipeline(project.platform, spec, parallel=3)
    assert states(run) == {"lazy": "failed", "slow": "failed", "missing": "failed", "after": "skipped"}
    assert run.step("lazy").error == "the command did not write declared output(s): x.txt"
    assert run.step("slow").error == "timed out after 0.5 s" and (run.step("slow").seconds or 0) < 10
    assert "cannot start 'no-such-program-xyz'" in (run.step("missing").error or "")
    assert run.step("missing").exit_code == 127


def test_a_cache_entry_whose_objects_are_gone_executes_again(project: Project) -> None:
    first = project.run()
    project.executed()
    digest = first.step("evaluate").outputs["metrics.json"]["digest"]
    assert project.platform.objects.delete(digest)
    run = project.run()
    assert states(run) == {**ALL_CACHED, "evaluate": "succeeded"} and project.executed() == ["evaluate"]
    assert project.platform.objects.exists(digest)  # the same bytes again
    with project.platform.session(write=False) as s:
        owners = {(r.owner_kind, r.owner_id) for r in s.scalars(select(ObjectRefRow).where(
            ObjectRefRow.digest == digest))}
    assert ("pipeline_cache", run.step("evaluate").cache_key) in owners
    assert ("pipeline_run", first.run.id) in owners and ("pipeline_run", run.run.id) in owners


def test_runs_are_listed_and_found_by_prefix_or_name(project: Project) -> None:
    a = project.run()
    b = project.run()
    with project.platform.session(write=False) as s:
        listed = list_runs(s)
        assert [r.id for r in listed] == [b.run.id, a.run.id]
        assert listed[0].counts == {"cached": 4} and listed[1].executed == 4
        assert get_run(s, a.run.id[:8]).run.id == a.run.id
        assert get_run(s, "demo").run.id == b.run.id  # a pipeline name means its latest run
        assert list_runs(s, pipeline="other") == []
        with pytest.raises(UsageError):
            list_runs(s, limit=-1)
    assert b.edges == [("prepare", "train"), ("prepare", "evaluate"), ("train", "evaluate")]
    assert b.to_dict()["steps"][0]["state"] == "cached" and b.to_dict()["counts"]["cached"] == 4


COUNT_PY = """\
import json, os, sys
folder, out = sys.argv[1:3]
with open(os.environ["PIPELINE_TRACE"], "a") as trace:
    trace.write(sys.argv[3] + "\\n")
manifest = json.load(open(os.path.join(folder, "manifest.json")))
with open(out, "w") as fh:
    json.dump({"version": manifest["version"], "items": len(manifest["items"])}, fh)
"""

DATA_YAML = """
pipeline: data
steps:
  - name: latest
    command: [python, count.py, "${MEDCYCLE_DATASET_CXR}", count.json, latest]
    inputs: {datasets: [cxr@latest]}
    outputs: {count: count.json}
  - name: pinned
    command: [python, count.py, "${MEDCYCLE_DATASET_CXR}", count.json, pinned]
    inputs: {datasets: [cxr@v1.0]}
    outputs: {count: count.json}
  - name: train
    command: [python, step.py, train, model.txt, "${{ steps.latest.outputs.count }}"]
    outputs: {model: model.txt}
  - name: other
    command: [python, step.py, other, other.txt]
    outputs: {other: other.txt}
"""


def _catalog(platform: Platform, seed: int) -> None:
    with platform.session() as s:
        make_catalog(s, sources=1, patients=2, studies_per_patient=1, series_per_study=1, instances_per_series=1,
                     objects=platform.objects, seed=seed)


def test_a_new_dataset_version_reruns_the_steps_that_read_it(project: Project) -> None:
    platform = project.platform
    _catalog(platform, 3)
    with platform.session() as s:
        create_dataset(s, "cxr", query="")
        v1 = versions.freeze(s, platform.objects, "cxr", tag="v1.0").version.id
    code = project.root / "data"
    code.mkdir()
    (code / "count.py").write_text(COUNT_PY)
    (code / "step.py").write_text(STEP_PY)
    (code / "pipeline.yaml").write_text(DATA_YAML)

    def run() -> dict[str, str]:
        detail = run_pipeline(platform, load_pipeline(code / "pipeline.yaml"), executor=LocalExecutor(platform))
        assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
        return states(detail) | {"_latest": detail.step("latest").inputs["datasets"]["cxr"]["version"]}

    assert run() == {"latest": "succeeded", "pinned": "succeeded", "train": "succeeded", "other": "succeeded",
                     "_latest": v1}
    assert sorted(project.executed()) == ["latest", "other", "pinned", "train"]
    first = get_run_counts(platform)
    assert json.loads(first) == {"version": v1, "items": 2}
    assert run() == {"latest": "cached", "pinned": "cached", "train": "cached", "other": "cached", "_latest": v1}
    assert project.executed() == []

    _catalog(platform, 4)  # two more images, then a second version
    with platform.session() as s:
        add_items(s, "cxr", query="")
        v2 = versions.freeze(s, platform.objects, "cxr", tag="v2.0").version.id
    assert v2 != v1
    assert run() == {"latest": "succeeded", "pinned": "cached", "train": "succeeded", "other": "cached",
                     "_latest": v2}
    assert sorted(project.executed()) == ["latest", "train"]
    assert json.loads(get_run_counts(platform)) == {"version": v2, "items": 4}


def get_run_counts(platform: Platform) -> str:
    with platform.session(write=False) as s:
        digest = get_run(s, "data").step("latest").outputs["count"]["digest"]
    return platform.objects.get(digest).decode()


def test_an_interrupted_run_stops_its_executions_and_says_so(project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "slow-finished"
    text = f"""
pipeline: interrupted
steps:
  - name: slow
    command: [python, -c, "import time, pathlib; time.sleep(20); pathlib.Path({str(marker)!r}).write_text('x')"]
  - name: quick
    command: [python, -c, "pass"]
"""
    spec = parse_pipeline(text, base=project.root)

    def interrupt_when_quick_ends(event: StepEvent) -> None:
        if event.step == "quick" and event.state.finished:
            raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(project.platform, spec, parallel=2, on_event=interrupt_when_quick_ends)
    assert time.monotonic() - started < 15  # the sleeping step was killed, not waited for
    with project.platform.session(write=False) as s:
        detail = get_run(s, "interrupted")
    assert detail.run.status is RunStatus.FAILED and detail.run.error == "interrupted"
    assert states(detail)["slow"] == "failed" and detail.step("slow").error == "interrupted"
    time.sleep(0.5)
    assert not marker.exists()
