"""The examples in docs/ run: every block marked ``<!-- doc-test: shell|rest|python -->`` is executed.

Each guide runs in a fresh home, its blocks in order, in one folder (so later blocks see what earlier ones
made). ``shell`` blocks run with ``bash -euo pipefail`` and the project's ``medcycle`` on PATH; ``rest``
blocks likewise, with a real ``medcycle serve`` on a free loopback port and ``MEDCYCLE_URL`` /
``MEDCYCLE_TOKEN`` (an admin token) exported; ``python`` blocks run with this interpreter. A guide without a demo
home starts from a copy of a home that ``medcycle init`` made once per session.

A guide that says ``<!-- doc-test-home: demo -->`` starts from a copy of a home where ``medcycle demo --profile
quick`` ran (made once per test session by tests/demo_home.py, which tests/core/test_demo.py reads too): a
registered, promoted and served model, predictions, a report.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from medcycle.testing.services import free_port
from tests.demo_home import DemoHome, cli_env

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"<!-- doc-test: (shell|rest|python) -->\n```(?:bash|python)\n(.*?)```", re.S)
GUIDES = sorted(p for p in DOCS.glob("*.md") if BLOCK.search(p.read_text()))
DEMO_HOME = "<!-- doc-test-home: demo -->"


def _serve(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = cwd / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "medcycle", "serve", "--port", str(port)], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/livez", timeout=2):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    proc.kill()
    proc.wait(timeout=10)
    raise AssertionError(f"medcycle serve did not come up: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def initialised_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A home right after ``medcycle init`` (a real subprocess) and its admin token, made once: each guide without
    a demo home starts from a copy of it instead of starting another ``medcycle init``."""
    root = tmp_path_factory.mktemp("initialised-home")
    init = subprocess.run([sys.executable, "-m", "medcycle", "init", "--json"], cwd=root, env=cli_env(root / "home"),
                          capture_output=True, text=True, timeout=120, check=True)
    return root / "home", json.loads(init.stdout)["admin_token"]


def test_every_guide_with_examples_is_collected() -> None:
    names = {p.name for p in GUIDES}
    assert {"quickstart.md", "operations.md", "security.md"} <= names, names


@pytest.mark.parametrize("guide", GUIDES, ids=[p.stem for p in GUIDES])
def test_guide_examples_run(guide: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    home = tmp_path / "home"
    env = cli_env(home)
    if DEMO_HOME in guide.read_text():
        made: DemoHome = request.getfixturevalue("demo_home")  # tests/demo_home.py, shared with tests/core
        env["MEDCYCLE_TOKEN"] = made.token
        shutil.copytree(made.home, home, symlinks=True)  # the SQLite file, objects and keys: a home of its own
    else:
        fresh, env["MEDCYCLE_TOKEN"] = request.getfixturevalue("initialised_home")
        shutil.copytree(fresh, home, symlinks=True)
    server: subprocess.Popen[bytes] | None = None
    try:
        for n, match in enumerate(BLOCK.finditer(guide.read_text()), start=1):
            kind, code = match.group(1), match.group(2)
            if kind == "rest" and server is None:
                server, env["MEDCYCLE_URL"] = _serve(env, tmp_path)
            cmd = [sys.executable, "-c", code] if kind == "python" else ["bash", "-euo", "pipefail", "-c", code]
            result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                                    check=False)
            assert result.returncode == 0, (
                f"{guide.name}, example {n} ({kind}) exited {result.returncode}:\n{code}\n--- stderr ---\n"
                f"{result.stderr[-3000:]}\n--- stdout ---\n{result.stdout[-1500:]}")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
