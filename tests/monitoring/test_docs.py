"""docs/monitoring.md: every ``medcycle monitor`` command is documented, and the serving example runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from medcycle.cli import monitor

DOC = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"


def test_every_command_is_documented() -> None:
    text = DOC.read_text()
    commands = [f"medcycle monitor {c.name}" for c in monitor.app.registered_commands if c.name]
    for group in monitor.app.registered_groups:
        assert group.typer_instance is not None
        commands += [f"medcycle monitor {group.name} {c.name}" for c in group.typer_instance.registered_commands]
    missing = [c for c in commands if c not in text]
    assert len(commands) >= 12 and not missing, f"document these in docs/monitoring.md: {missing}"


def test_the_serving_example_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                  tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    [example] = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    example = example.replace("/tmp/medcycle-monitoring-doc", str(tmp_path / "home"))
    exec(compile(example, str(DOC), "exec"), {"__name__": "docs_example"})
    assert capsys.readouterr().out == "logged 32\n"
