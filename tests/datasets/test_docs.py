"""docs/datasets.md: its Python example runs, and every ``medcycle dataset`` command is documented."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
import typer

from medcycle.cli import datasets as datasets_cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "datasets.md"


def _commands(app: typer.Typer, prefix: str = "") -> list[str]:
    names = [f"{prefix}{c.name}" for c in app.registered_commands if c.name]
    for group in app.registered_groups:
        assert group.typer_instance is not None and group.name is not None
        names += _commands(group.typer_instance, f"{prefix}{group.name} ")
    return names


def test_every_command_is_documented() -> None:
    text = DOC.read_text()
    missing = [c for c in _commands(datasets_cli.app) if f"medcycle dataset {c}" not in text]
    assert not missing, f"document these in docs/datasets.md: {missing}"


def test_python_example_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the example's home goes under tmp_path
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    example = next(b for b in blocks if "platform.init()" in b)
    exec(compile(example, str(DOC), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "images," in out and "# Dataset card: chest-xr v1" in out
