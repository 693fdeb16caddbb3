"""docs/hypotheses.md: every ``medcycle hypothesis`` command is documented and the Python example runs."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

from medcycle.cli import hypotheses as hypotheses_cli
from medcycle.hypotheses.vocabulary import QUESTIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "hypotheses.md"


def test_every_command_and_question_is_documented() -> None:
    text = DOC.read_text()
    names = [c.name for c in hypotheses_cli.app.registered_commands if c.name]
    assert len(names) == 13
    missing = [n for n in names if f"medcycle hypothesis {n}" not in text]
    assert not missing, f"document these in docs/hypotheses.md: {missing}"
    assert all(f"| `{q.key}` | {q.group.value} | {q.text} |" in text for q in QUESTIONS)


def test_python_example_runs_and_prints_what_the_doc_says(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the example's home goes under tmp_path
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    text = DOC.read_text()
    example = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    exec(compile(example, str(DOC), "exec"), {"__name__": "docs_example"})
    printed = re.search(r"prints\n\n```\n(.*?)```", text, flags=re.S)
    assert printed is not None
    assert capsys.readouterr().out == printed.group(1)
