"""``kill -9`` of an agent mid-task: its child dies with it, the job is redelivered after the lease and finished
once by another agent. Real processes (``medcycle agent start``), on the embedded queue and on Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis

from medcycle.agents.enqueue import enqueue
from medcycle.jobs.base import JobState
from medcycle.platform import Platform
from medcycle.testing.platform import make_settings
from tests.agents.conftest import PY, make_repo, store_env
from tests.agents.test_agent import _gone

AGENT_MAIN = """\
import sys
from medcycle.cli import agents
from medcycle.cli.errors import run
from medcycle.cli.main import app
if not any(g.name == "agent" for g in app.registered_groups):
    app.add_typer(agents.app, name="agent")
sys.exit(run(app, sys.argv[1:]))
"""

WORK = """\
import os, pathlib, sys, time
marks = pathlib.Path(sys.argv[1])
n = len(list(marks.iterdir()))
(marks / f"{n}-{os.getpid()}").write_text("")
if n == 0:
    time.sleep(120)  # the first delivery hangs until its agent is killed
pathlib.Path("out.txt").write_text(f"attempt {n}")
print("finished attempt", n)
"""


def _with_prefix(url: str, prefix: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode([*parse_qsl(parts.query), ("key_prefix", prefix)])))


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.integration)])
def kill_platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    prefix = f"medcycle-agents-{uuid.uuid4().hex[:12]}:"
    url = "embedded"
    if request.param == "redis":
        url = _with_prefix(request.getfixturevalue("redis_url"), prefix)
    platform = Platform(make_settings(tmp_path / "home", queue_url=url))
    platform.init()
    try:
        yield platform
    finally:
        platform.close()
        if request.param == "redis":
            client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()


def _agent(platform: Platform, tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{name}.log"
    cmd = [PY, "-c", AGENT_MAIN, "agent", "start", "--queue", "kill", "--lease-seconds", "2", "--max-tasks", "1",
           "--name", name, "--workdir", str(tmp_path / name), "--stop-grace", "1", "--json"]
    env = {**os.environ, **store_env(platform)}
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT), log


@pytest.mark.slow
def test_killed_agent_job_is_redelivered_and_finished_once(kill_platform: Platform, tmp_path: Path) -> None:
    platform = kill_platform
    repo = make_repo(tmp_path / "code", {"work.py": WORK})
    marks = tmp_path / "marks"
    marks.mkdir()
    job = enqueue(platform, ["python", "work.py", str(marks)], queue="kill", cwd=repo, outputs=["out.txt"]).job

    doomed, doomed_log = _agent(platform, tmp_path, "doomed")
    try:
        stop_at = time.monotonic() + 60
        while not list(marks.iterdir()):
            assert doomed.poll() is None, doomed_log.read_text()
            assert time.monotonic() < stop_at, f"the first agent never ran the task:\n{doomed_log.read_text()}"
            time.sleep(0.05)
        assert platform.jobs.get(job.id).lease_owner == "doomed"
        os.kill(doomed.pid, signal.SIGKILL)
    finally:
        if doomed.poll() is None:
            doomed.kill()
        doomed.wait(timeout=30)
    first_child = int(next(marks.iterdir()).name.split("-")[1])
    stop_at = time.monotonic() + 5
    while not _gone(first_child):  # PR_SET_PDEATHSIG: the task died with its agent
        assert time.monotonic() < stop_at, "the killed agent's child is still running"
        time.sleep(0.05)

    survivor, survivor_log = _agent(platform, tmp_path, "survivor")
    try:
        assert survivor.wait(timeout=90) == 0, survivor_log.read_text()
    finally:
        if survivor.poll() is None:
            survivor.kill()
            survivor.wait(timeout=30)
    stats = json.loads(survivor_log.read_text()[survivor_log.read_text().index("{"):])
    assert (stats["taken"], stats["finished"]) == (1, 1)
    final = platform.jobs.get(job.id)
    assert final.state == JobState.SUCCEEDED and final.attempts == 2
    result = final.result or {}
    assert result["agent"] == "survivor" and result["exit_code"] == 0
    assert platform.objects.get(result["outputs"]["out.txt"]) == b"attempt 1"
    assert len(list(marks.iterdir())) == 2  # delivered twice, run twice, completed once (by the survivor)
    assert b"finished attempt 1" in platform.objects.get(result["log_digest"])
