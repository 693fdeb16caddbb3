"""Running git for the agents: never prompts, never reads a pager, errors carry git's own words."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from medcycle.agents.errors import TaskSetupFailed

GIT_TIMEOUT_S = 600.0


def git_env() -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_PAGER": "cat",
            "GIT_ASKPASS": "", "SSH_ASKPASS": "", "GCM_INTERACTIVE": "never"}


def run_git(cwd: Path | None, *args: str, check: bool = True, timeout: float = GIT_TIMEOUT_S,
            what: str | None = None, hint: str | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``git ARGS`` in ``cwd``; with ``check`` a failure raises :class:`TaskSetupFailed` quoting git."""
    cmd = ["git", *(["-C", str(cwd)] if cwd is not None else []), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, env=git_env(), timeout=timeout,
                              check=False)
    except FileNotFoundError as exc:
        raise TaskSetupFailed("git is not installed on this machine",
                              hint="Install git; agents rebuild each task's code with it.") from exc
    except subprocess.TimeoutExpired as exc:
        raise TaskSetupFailed(f"`git {args[0]}` took longer than {timeout:.0f} s",
                              hint=hint or "Check that the remote is reachable from this machine.") from exc
    if check and proc.returncode != 0:
        said = proc.stderr.decode(errors="replace").strip().splitlines()
        raise TaskSetupFailed(f"{what or 'git ' + args[0]} failed: {' / '.join(said[-3:]) or 'no message'}",
                              hint=hint)
    return proc


def git_out(cwd: Path | None, *args: str, what: str | None = None, hint: str | None = None) -> str:
    """Stdout of ``git ARGS`` (stripped); a failure raises :class:`TaskSetupFailed`."""
    return run_git(cwd, *args, what=what, hint=hint).stdout.decode(errors="replace").strip()


def has_commit(repo: Path, commit: str) -> bool:
    """Whether ``repo`` holds ``commit`` (as a commit object)."""
    return run_git(repo, "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode == 0
