"""docs/cli.md is the generated CLI reference and stays in step with the commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from medcycle.cli import reference
from medcycle.cli.main import app

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_reference_matches_the_commands() -> None:
    assert DOC.read_text() == reference.render(app), (
        "docs/cli.md is stale: regenerate it with `python -m medcycle.cli.reference > docs/cli.md`")


def test_every_command_and_option_is_in_the_reference() -> None:
    text = DOC.read_text()
    root = typer.main.get_command(app)
    missing = []
    stack: list[tuple[str, object]] = [("medcycle", root)]
    while stack:
        title, command = stack.pop()
        if f"## `{title}`" not in text:
            missing.append(title)
        for name, sub in reference.subcommands(command):
            stack.append((f"{title} {name}", sub))
    assert not missing
    assert "`-j, --jobs <int range>`" in text and "medcycle data ingest" in text


def test_check_mode_flags_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text(DOC.read_text().replace("## `medcycle data ingest`", "## `medcycle data slurp`"))
    result = subprocess.run([sys.executable, "-m", "medcycle.cli.reference", "--check", str(stale)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "regenerate it with" in result.stderr
    assert reference.main(["--check", str(DOC)]) == 0
