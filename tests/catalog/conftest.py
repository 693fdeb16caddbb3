"""Fixtures of the catalog tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home for in-process CLI runs: no MEDCYCLE_ setting of the caller's environment, 300 columns (a table
    cell is not wrapped). Not yet initialised."""
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("MEDCYCLE_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "300")
    return home
