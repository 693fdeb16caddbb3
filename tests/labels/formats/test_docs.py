"""The Formats section of docs/labels.md stays true: its example runs, every format and option is in it."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medcycle.labels import formats

DOC = Path(__file__).resolve().parents[3] / "docs" / "labels.md"


def _section() -> str:
    text = DOC.read_text()
    match = re.search(r"\n## Formats\n(.*?)(?=\n## |\Z)", text, flags=re.S)
    assert match is not None, "docs/labels.md has no '## Formats' section"
    return match.group(1)


def test_every_format_and_option_is_documented() -> None:
    section = _section()
    for name, spec in formats.FORMATS.items():
        assert f"| `{name}` |" in section, name
        for fn in (spec.reader, spec.writer):
            for param in inspect.signature(fn).parameters.values():
                if param.kind == param.KEYWORD_ONLY and param.name != "images":
                    assert f"`{param.name}=" in section, f"{name}: option {param.name}"


def test_example_runs(tmp_path: Path) -> None:
    block = re.search(r"```python\n(.*?)```", _section(), flags=re.S)
    assert block is not None
    env = {**os.environ, "PYTHONPATH": str(DOC.parents[1])}
    result = subprocess.run([sys.executable, "-W", "error", "-c", block.group(1)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["coco", "['classes.txt', 'data.yaml', 'labels/chest.txt']"]
    assert (tmp_path / "masks/ct1.nii.gz").is_file() and (tmp_path / "seg/ct1.seg.dcm").is_file()


@pytest.mark.parametrize("fmt", sorted(formats.FORMATS))
def test_module_docstrings_say_what_is_kept(fmt: str) -> None:
    doc = inspect.getdoc(formats.FORMATS[fmt]._load()) or ""
    assert "Not kept" in doc or "not kept" in doc.lower() or "Not stored" in doc, fmt
