"""deploy/release/github-actions.yml: one tag push tests, builds and publishes — and it names only what exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "deploy" / "release" / "github-actions.yml"


def load() -> dict[str, Any]:
    doc = yaml.safe_load(PIPELINE.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as a boolean
    return doc


def test_one_trigger_and_nothing_published_before_the_tests_pass() -> None:
    doc = load()
    assert doc["on"] == {"push": {"tags": ["v*.*.*"]}}
    jobs = doc["jobs"]
    assert {"test", "wheel", "images", "chart", "publish"} <= set(jobs)
    for name in ("wheel", "images", "chart"):
        assert jobs[name]["needs"] == "test", name
    assert set(jobs["publish"]["needs"]) == {"wheel", "images", "chart"}
    steps = " ".join(str(s.get("run", "")) for s in jobs["test"]["steps"])
    assert "bash .ci/run" in steps and "CI=true" in steps


def test_it_names_only_files_and_commands_that_exist() -> None:
    text = PIPELINE.read_text()
    for path in set(re.findall(r"\b(deploy/[\w./-]+|\.ci/run|CHANGELOG\.md|pyproject\.toml|medcycle/__init__\.py)",
                               text)):
        assert (ROOT / path).exists(), path
    # the version rewrites hit exactly one line each
    assert len(re.findall(r"^version = .*", (ROOT / "pyproject.toml").read_text(), re.M)) == 1
    assert len(re.findall(r"^__version__ = .*", (ROOT / "medcycle" / "__init__.py").read_text(), re.M)) == 1
    # the image's entry point is `medcycle`, so the smoke test's `serve --host` must be a real option
    assert 'ENTRYPOINT ["tini", "--", "medcycle"]' in (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert "`--host <str>`" in (ROOT / "docs" / "cli.md").read_text().split("## `medcycle serve`")[1]
    images = load()["jobs"]["images"]["strategy"]["matrix"]["include"]
    assert {i["dockerfile"] for i in images} == {"deploy/docker/Dockerfile", "deploy/docker/Dockerfile.cuda"}
