"""``medcycle pipeline …``: run, show, list and validate through the CLI, with --json, exit codes and hints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import typer

from medcycle.cli import pipelines as pipelines_cli
from medcycle.cli import system
from medcycle.cli.errors import run
from medcycle.cli.main import root
from tests.pipelines.conftest import write_project


def make_app() -> typer.Typer:
    """The root command with the pipeline group, as ``medcycle.cli.main`` will wire it."""
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    app.callback()(root)
    system.register(app)
    app.add_typer(pipelines_cli.app, name="pipeline")
    return app


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIPELINE_TRACE", str(tmp_path / "trace.txt"))
    monkeypatch.setenv("COLUMNS", "200")
    assert run(make_app(), ["init"]) == 0
    capsys.readouterr()
    return write_project(tmp_path / "code")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(make_app(), ["pipeline", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def ok_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_pipeline_commands_round_trip(code: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = str(code / "pipeline.yaml")
    first = ok_json(capsys, "run", file)
    assert first["status"] == "succeeded" and first["pipeline"] == "demo" and first["executor"] == "local"
    assert [s["state"] for s in first["steps"]] == ["succeeded"] * 4
    assert first["counts"]["succeeded"] == 4 and ["prepare", "train"] in first["edges"]
    assert first["created_by"].startswith("local:")

    code_, out, err = cli(capsys, "run", file)
    assert code_ == 0, err
    assert "4 cached" in out and "cached" in err  # the table, and progress lines on stderr
    listed = ok_json(capsys, "list")
    assert [r["counts"]["cached"] for r in listed] == [4, 0] and listed[1]["id"] == first["id"]
    shown = ok_json(capsys, "show", first["id"][:10])
    assert shown["id"] == first["id"] and shown["steps"][0]["outputs"]
    code_, out, _ = cli(capsys, "show", "demo")  # the pipeline's latest run
    assert code_ == 0 and "demo" in out and listed[0]["id"] in out

    forced = ok_json(capsys, "run", file, "--force", "report", "--param", "lr=0.5")
    assert {s["name"]: s["state"] for s in forced["steps"]} == {
        "prepare": "cached", "report": "succeeded", "train": "succeeded", "evaluate": "succeeded"}
    valid = ok_json(capsys, "validate", file)
    assert [s["name"] for s in valid["steps"]] == ["prepare", "report", "train", "evaluate"]
    code_, out, _ = cli(capsys, "validate", file)
    assert code_ == 0 and "demo: 4 steps, valid" in out


def test_failures_exit_non_zero_with_hints(code: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = code / "pipeline.yaml"
    (code / "data.txt").unlink()
    code_, out, err = cli(capsys, "run", str(file), "--json")
    assert code_ == 1
    body = json.loads(out)
    assert body["status"] == "failed" and {s["name"]: s["state"] for s in body["steps"]}["evaluate"] == "skipped"
    prepare = next(s for s in body["steps"] if s["name"] == "prepare")
    assert "files pattern 'data.txt' matches no file" in prepare["error"]

    file.write_text(file.read_text().replace("command: [python, steps/step.py, train", "comand: [python, x"))
    code_, _, err = cli(capsys, "run", str(file))
    assert code_ == 2 and "Error: " in err and "unknown field 'comand'" in err and "Did you mean 'command'?" in err
    code_, _, err = cli(capsys, "validate", str(file))
    assert code_ == 2 and "step 'train'" in err
    code_, _, err = cli(capsys, "run", str(code / "missing.yaml"))
    assert code_ == 2 and "does not exist" in err
    code_, _, err = cli(capsys, "show", "nope")
    assert code_ == 4 and "medcycle pipeline list" in err


def test_the_agent_executor_needs_a_queue(code: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code_, _, err = cli(capsys, "run", str(code / "pipeline.yaml"), "--executor", "agent")
    assert code_ == 2 and "--executor agent needs --queue NAME" in err and "medcycle agent start" in err
    code_, _, err = cli(capsys, "run", str(code / "pipeline.yaml"), "--queue", "gpu")
    assert code_ == 2 and "--queue applies to --executor agent only" in err
