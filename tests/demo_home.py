"""One run of ``medcycle demo --profile quick`` per test session, shared by the tests that read what it made.

The demo (the whole cycle: ingest, datasets, labeling, training, release gates, serving, monitoring, rollback) is
the slowest thing the suite does. ``tests/core/test_demo.py`` checks what its first run left and that a second run
adds nothing; ``tests/docs/test_examples.py`` runs the guides' examples on a home where it ran. Both start from a
copy of the one home made here, by the real CLI (``medcycle init``, then ``medcycle demo``) in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.training.conftest import DEID_KEY


@dataclass(frozen=True)
class DemoHome:
    """A home after ``medcycle init`` and ``medcycle demo --profile quick --no-serve``; never written to by tests
    (copy it first)."""

    home: Path
    token: str  # the admin token ``medcycle init`` printed
    stdout: str  # what ``medcycle demo`` printed (300 columns wide)


def cli_env(home: Path) -> dict[str, str]:
    """The caller's environment without ``MEDCYCLE_*``, this interpreter's ``medcycle`` on PATH, ``home`` set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCYCLE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MEDCYCLE_HOME"] = str(home)
    return env


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> DemoHome:
    """The demo's home, made once per session (see the module's docstring)."""
    root = tmp_path_factory.mktemp("demo-home")
    home = root / "home"
    env = {**cli_env(home), "COLUMNS": "300"}  # the closing table on one line per page, as a wide terminal shows it
    init = subprocess.run([sys.executable, "-m", "medcycle", "init", "--json"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    # a fixed de-identification key before anything is ingested: the same pseudonyms, hence the same splits and the
    # same trained models, every run (as tests.training.conftest.pin_deid_key does for a test platform)
    key = home / "keys" / "deid.key"
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key.write_text(DEID_KEY + "\n")
    key.chmod(0o600)
    demo = subprocess.run([sys.executable, "-m", "medcycle", "demo", "--profile", "quick", "--no-serve"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    # every stage ran (a model promoted and served, a drift page, a rollback): the tests read what they left
    assert "left out" not in demo.stdout, demo.stdout[-6000:]
    return DemoHome(home, json.loads(init.stdout)["admin_token"], demo.stdout)
