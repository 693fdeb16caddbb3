"""``python -m medcycle.pipelines.stage``: what an agent runs for a step — place the inputs, then the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from medcycle.agents.executor import settings_env
from medcycle.pipelines.stage import MODULE, wrap
from medcycle.platform import Platform

SHOW = "import os,sys; print(open('inputs/a/x.txt').read(), os.environ['MEDCYCLE_PIPELINE_STEP']); sys.exit(4)"


def _run(platform: Platform, cwd: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCYCLE_")}
    env.update(settings_env(platform.settings))
    return subprocess.run([sys.executable, *argv[1:]] if argv[0] == "python" else argv, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_inputs_are_placed_then_the_command_replaces_the_wrapper(sqlite_platform: Platform, tmp_path: Path) -> None:
    digest = sqlite_platform.objects.put(b"hello from step a").digest
    argv = wrap(["python", "-c", SHOW], {"inputs/a/x.txt": digest}, run="r1", step="b")
    assert argv[:3] == ["python", "-m", MODULE] and argv[-4:] == ["--", "python", "-c", SHOW]
    proc = _run(sqlite_platform, tmp_path, argv)
    assert proc.returncode == 4, proc.stderr  # the command's own exit status
    assert proc.stdout.strip() == "hello from step a b"
    assert (tmp_path / "inputs" / "a" / "x.txt").read_bytes() == b"hello from step a"


def test_bad_inputs_fail_before_the_command(sqlite_platform: Platform, tmp_path: Path) -> None:
    missing = "0" * 64
    proc = _run(sqlite_platform, tmp_path, wrap(["python", "-c", "print('ran')"], {"x.txt": missing}, run="r",
                                                step="s"))
    assert proc.returncode == 70 and "cannot place the step's inputs" in proc.stderr and "ran" not in proc.stdout
    proc = _run(sqlite_platform, tmp_path, ["python", "-m", MODULE, "--input", "../x=abc", "--", "true"])
    assert proc.returncode == 2 and "RELATIVE_PATH=DIGEST" in proc.stderr
    proc = _run(sqlite_platform, tmp_path, ["python", "-m", MODULE, "--", "no-such-program-xyz"])
    assert proc.returncode == 127 and "cannot run 'no-such-program-xyz'" in proc.stderr
