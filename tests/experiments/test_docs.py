"""docs/experiments.md: its Python example runs, and every ``medcycle run`` command is documented."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

from medcycle.cli import runs as runs_cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "experiments.md"


def test_every_command_is_documented() -> None:
    text = DOC.read_text()
    commands = [c.name for c in runs_cli.app.registered_commands if c.name]
    missing = [c for c in commands if f"medcycle run {c}" not in text]
    assert commands and not missing, f"document these in docs/experiments.md: {missing}"


def test_python_example_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    example = next(b for b in blocks if "platform.init()" in b)
    exec(compile(example, str(DOC), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "epoch done" in out and "baseline finished 0.83 not reproducible" in out
