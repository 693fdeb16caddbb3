"""docs/data.md stays true: its shell session runs, every field and every `medcycle data` command is documented."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medcycle.catalog.query import FIELDS
from medcycle.cli import data as data_cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "data.md"


def test_every_field_and_command_is_documented() -> None:
    text = DOC.read_text()
    assert not [f for f in FIELDS if f"| `{f}` |" not in text]
    assert not [c.name for c in data_cli.app.registered_commands if f"medcycle data {c.name}" not in text]


def test_shell_session_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"## A first session\n\n```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    assert block is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCYCLE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block.group(1)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"ingested"' in (tmp_path / "ingest.json").read_text()
    assert '"totals"' in (tmp_path / "summary.json").read_text()
