"""Package-level promises: no torch at import, a deliberate public API, docs that match the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import medcycle
from medcycle.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_import_does_not_pull_torch_or_heavy_backends() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import medcycle"], capture_output=True, text=True, check=True
    )
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    for heavy in ("torch", "monai", "boto3", "redis", "fastapi", "numpy"):
        assert heavy not in imported, f"`import medcycle` imports {heavy}"


def test_public_api_is_deliberate() -> None:
    assert sorted(medcycle.__all__) == sorted(
        ["MedcycleError", "Platform", "Run", "Settings", "__version__", "load_settings", "start_run"]
    )
    for name in medcycle.__all__:
        assert hasattr(medcycle, name)


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [name for name in Settings.model_fields if f"{ENV_PREFIX}{name.upper()}" not in doc]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"
    documented = set(re.findall(r"`(MEDCYCLE_[A-Z0-9_]+)`", doc))
    known = {f"{ENV_PREFIX}{n.upper()}" for n in Settings.model_fields} | {"MEDCYCLE_CONFIG"}
    stale = sorted(d for d in documented - known if not d.startswith("MEDCYCLE_TEST_"))
    assert not stale, f"docs/configuration.md documents settings that do not exist: {stale}"
