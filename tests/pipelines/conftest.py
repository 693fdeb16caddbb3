"""A small pipeline project on disk whose steps record each real execution in a trace file.

Graph (``report`` is an independent branch)::

    prepare ──► train ──► evaluate
        └──────────────────┘
    report

Every step runs ``steps/step.py NAME OUT [INPUT|--FLAG...]``: it appends NAME to ``$PIPELINE_TRACE`` and writes OUT
holding NAME, its params and the contents of its inputs — so outputs change exactly when inputs do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from medcycle.pipelines.executors import LocalExecutor
from medcycle.pipelines.runner import run_pipeline
from medcycle.pipelines.spec import load_pipeline
from medcycle.pipelines.state import RunDetail
from medcycle.platform import Platform

STEP_PY = """\
import json, os, sys
name, out, *inputs = sys.argv[1:]
with open(os.environ["PIPELINE_TRACE"], "a") as trace:
    trace.write(name + "\\n")
if os.environ.get("FAIL_STEP") == name or os.path.exists("fail-" + name):
    print(f"{name}: failing on purpose", file=sys.stderr)
    sys.exit(3)
parts = [name, os.environ["MEDCYCLE_PARAMS"]]
for arg in inputs:
    if arg.startswith("--"):
        parts.append(arg)
        continue
    with open(arg) as fh:
        parts.append(fh.read())
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out, "w") as fh:
    fh.write("\\n".join(parts))
print(f"{name} wrote {out}")
"""

PIPELINE_YAML = """\
pipeline: demo
description: prepare → train → evaluate, and an independent report
params:
  lr: 0.1
  epochs: 2
  title: weekly
steps:
  - name: prepare
    command: [python, steps/step.py, prepare, out/prepared.txt, data.txt]
    inputs:
      files: [data.txt]
    outputs:
      prepared: out/prepared.txt
  - name: train
    command: [python, steps/step.py, train, model.txt, "${{ steps.prepare.outputs.prepared }}",
              "--lr=${params.lr}"]
    inputs:
      params: {seed: 7}
    outputs:
      model: model.txt
  - name: evaluate
    command: [python, steps/step.py, evaluate, metrics.json, "${{ steps.train.outputs.model }}",
              "${{ steps.prepare.outputs.prepared }}"]
    outputs: [metrics.json]
  - name: report
    command: [python, steps/step.py, report, report.txt, notes.txt, "--title=${params.title}"]
    inputs:
      files: [notes.txt]
    outputs:
      report: report.txt
"""


@dataclass
class Project:
    root: Path
    trace: Path
    platform: Platform

    @property
    def file(self) -> Path:
        return self.root / "pipeline.yaml"

    def executed(self) -> list[str]:
        """Steps executed since the last call (in order), read from the trace file."""
        lines = self.trace.read_text().split() if self.trace.exists() else []
        self.trace.write_text("")
        return lines

    def run(self, **kwargs: object) -> RunDetail:
        spec = load_pipeline(self.file, params=kwargs.pop("params", None))  # type: ignore[arg-type]
        return run_pipeline(self.platform, spec, executor=LocalExecutor(self.platform), **kwargs)  # type: ignore[arg-type]


def write_project(root: Path, yaml_text: str = PIPELINE_YAML) -> Path:
    (root / "steps").mkdir(parents=True, exist_ok=True)
    (root / "steps" / "step.py").write_text(STEP_PY)
    (root / "data.txt").write_text("scan-1\nscan-2\n")
    (root / "notes.txt").write_text("all good\n")
    (root / "pipeline.yaml").write_text(yaml_text)
    return root


def make_project(tmp_path: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Project:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    trace = tmp_path / "trace.txt"
    monkeypatch.setenv("PIPELINE_TRACE", str(trace))
    return Project(write_project(tmp_path / "code"), trace, platform)


@pytest.fixture
def project(tmp_path: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The sample project on the test platform (SQLite and PostgreSQL)."""
    return make_project(tmp_path, platform, monkeypatch)


@pytest.fixture
def sqlite_project(tmp_path: Path, sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The sample project on SQLite only (tests whose database side the runner tests already cover)."""
    return make_project(tmp_path, sqlite_platform, monkeypatch)


def states(run: RunDetail) -> dict[str, str]:
    return {s.name: s.state.value for s in run.steps}
