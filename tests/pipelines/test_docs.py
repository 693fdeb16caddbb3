"""docs/pipelines.md: every command and field is documented, and the example shown is the one tested."""

from __future__ import annotations

import re
from pathlib import Path

from medcycle.cli import pipelines as pipelines_cli
from medcycle.pipelines.spec import INPUT_KEYS, PIPELINE_KEYS, STEP_KEYS, parse_pipeline
from medcycle.pipelines.state import StepState

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "pipelines.md"
EXAMPLE = ROOT / "examples" / "pipelines" / "pipeline.yaml"


def test_every_command_field_and_state_is_documented() -> None:
    text = DOC.read_text()
    names = [c.name for c in pipelines_cli.app.registered_commands if c.name]
    assert sorted(names) == ["list", "run", "show", "validate"]
    assert not [n for n in names if f"medcycle pipeline {n}" not in text]
    for key in (*PIPELINE_KEYS, *STEP_KEYS, *INPUT_KEYS):
        assert f"| `{key}` |" in text, f"document the field {key!r} in docs/pipelines.md"
    for state in StepState:
        assert f"| `{state.value}` |" in text


def test_the_documented_example_is_the_example_file_and_it_is_valid() -> None:
    text = DOC.read_text()
    block = re.search(r"```yaml\n(.*?)```", text, flags=re.S)
    assert block is not None
    assert block.group(1) == EXAMPLE.read_text()
    spec = parse_pipeline(block.group(1), base=EXAMPLE.parent)
    assert [s.name for s in spec.steps] == ["freeze", "train", "evaluate"]
    assert spec.step("freeze").cache is False and spec.step("evaluate").needs == ("train",)
