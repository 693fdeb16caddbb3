"""Fixtures for agent tests: temporary git repositories, an in-process agent, store settings for child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from medcycle.agents.agent import Agent, AgentStats
from medcycle.agents.executor import ExecOptions
from medcycle.platform import Platform
from medcycle.testing.platform import TEST_SECRET

PY = sys.executable


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def make_repo(path: Path, files: dict[str, str], *, remote: Path | None = None) -> Path:
    """A repository with one commit holding ``files``; pushed to a new bare ``remote`` when given."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.org")
    git(path, "config", "user.name", "Test")
    commit(path, files, "first")
    if remote is not None:
        subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
        git(path, "remote", "add", "origin", f"file://{remote}")
        git(path, "push", "-q", "origin", "main")
    return path


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", *files)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def store_env(platform: Platform) -> dict[str, str]:
    """Variables that point a child process (agent, script) at the test platform's store."""
    s = platform.settings
    return {"MEDCYCLE_HOME": str(s.home), "MEDCYCLE_DATABASE_URL": s.resolved_database_url,
            "MEDCYCLE_OBJECT_STORE_URL": s.resolved_object_store_url, "MEDCYCLE_ENVIRONMENT": "test",
            "MEDCYCLE_SECRET_KEY": TEST_SECRET, "MEDCYCLE_QUEUE_URL": s.queue_url}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MEDCYCLE_* variable of the outer shell leaks into the tests or their children."""
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)


@pytest.fixture
def options(tmp_path: Path) -> ExecOptions:
    return ExecOptions(workdir=tmp_path / "agent", name="test-agent", stop_grace_s=3.0)


RunAgent = Callable[..., AgentStats]


@pytest.fixture
def run_agent(sqlite_platform: Platform, options: ExecOptions) -> RunAgent:
    """``run_agent(queue, max_tasks=1, **option_changes)`` runs an in-process agent until it took that many."""
    def run(queue: str = "q", max_tasks: int = 1, lease_seconds: float = 5.0, **changes: Any) -> AgentStats:
        for key, value in changes.items():
            setattr(options, key, value)
        agent = Agent(sqlite_platform, queue, options, lease_seconds=lease_seconds, wait_ms=200, say=lambda _l: None)
        return agent.run(max_tasks=max_tasks)

    return run


@pytest.fixture
def background_agent(sqlite_platform: Platform, options: ExecOptions) -> Iterator[Callable[..., Agent]]:
    """Start an agent on a thread (``start(queue, max_tasks)``); it is stopped and joined at teardown."""
    started: list[tuple[Agent, threading.Thread]] = []

    def start(queue: str = "q", max_tasks: int = 1, lease_seconds: float = 5.0) -> Agent:
        agent = Agent(sqlite_platform, queue, options, lease_seconds=lease_seconds, wait_ms=200, say=lambda _l: None)
        thread = threading.Thread(target=agent.run, kwargs={"max_tasks": max_tasks}, daemon=True)
        thread.start()
        started.append((agent, thread))
        return agent

    yield start
    for agent, thread in started:
        agent.shutdown.set()
        thread.join(30)
