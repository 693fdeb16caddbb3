"""Fixtures for tracking tests: a run factory on the test platform, a git repository with a dirty tree."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from medcycle.experiments.ingest import LocalSink
from medcycle.experiments.sdk import Run, start_run
from medcycle.platform import Platform

StartRun = Callable[..., Run]


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def make_repo(path: Path, *, remote: Path | None = None) -> Path:
    """A repository with one commit (train.py); pushed to ``remote`` (a bare repository) when given."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.org")
    git(path, "config", "user.name", "Test")
    (path / "train.py").write_text("lr = 0.001\nprint('training')\n")
    git(path, "add", "train.py")
    git(path, "commit", "-q", "-m", "first")
    if remote is not None:
        subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
        git(path, "remote", "add", "origin", f"file://{remote}")
        git(path, "push", "-q", "origin", "main")
    return path


@pytest.fixture
def dirty_repo(tmp_path: Path) -> Path:
    """One commit, then an uncommitted change to train.py and an untracked file."""
    repo = make_repo(tmp_path / "code")
    (repo / "train.py").write_text("lr = 0.01  # tried a bigger step\nprint('training')\n")
    (repo / "notes.txt").write_text("untracked\n")
    return repo


@pytest.fixture
def track(platform: Platform, tmp_path: Path) -> Iterator[StartRun]:
    """``track(project, **kwargs)`` starts a run on the test platform with quiet defaults; all end at teardown."""
    started: list[Run] = []

    def start(project: str = "proj", **kwargs: Any) -> Run:
        options: dict[str, Any] = {"platform": platform, "journal_dir": tmp_path / "journals", "resources": False,
                                   "capture_output": False, "capture": False, "flush_interval": 0.05}
        options.update(kwargs)
        run = start_run(project, **options)
        started.append(run)
        return run

    yield start
    for run in started:
        if not run.ended:
            run.end()


class FlakySink(LocalSink):
    """A local sink that can be 'down' (every call fails) or lose acknowledgements (apply, then fail)."""

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        self.down = False
        self.lose_acks = 0
        self.applied_batches = 0

    def _check(self) -> None:
        if self.down:
            from medcycle.errors import BackendUnavailable

            raise BackendUnavailable("simulated outage")

    def apply(self, run_id: str, records: list[Any]) -> int:
        self._check()
        done = super().apply(run_id, records)
        self.applied_batches += 1
        if self.lose_acks:
            self.lose_acks -= 1
            raise ConnectionResetError("simulated lost acknowledgement")
        return done

    def applied_seq(self, run_id: str) -> int:
        self._check()
        return super().applied_seq(run_id)

    def has_object(self, digest: str) -> bool:
        self._check()
        return super().has_object(digest)

    def put_object(self, path: Path, digest: str) -> None:
        self._check()
        super().put_object(path, digest)
