"""A real Redis for tests: ``MEDCYCLE_TEST_REDIS_URL``, the local server, or a throwaway ``redis-server``.

Tests share the server and isolate themselves with a unique key prefix (``RedisJobQueue(key_prefix=...)``),
deleting their keys afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from medcycle.testing.services import free_port, skip_or_fail, wait_for_port

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def redis_reachable(url: str) -> bool:
    """True when a PING to ``url`` is answered."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _start_server() -> tuple[str, subprocess.Popen[bytes], Path] | None:
    """``redis-server`` on a free loopback port, no persistence, in a temp dir."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="medcycle-redis-"))
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(tmp), "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    if wait_for_port("127.0.0.1", port, 15) and redis_reachable(url):
        return url, proc, tmp
    _stop(proc, tmp)
    return None


def _stop(proc: subprocess.Popen[bytes], tmp: Path) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server for this test session (skipped, or failed under ``CI=true``, when none)."""
    url = os.environ.get("MEDCYCLE_TEST_REDIS_URL")
    if url:
        if not redis_reachable(url):
            skip_or_fail(f"MEDCYCLE_TEST_REDIS_URL={url} is not reachable")
        yield url
        return
    if redis_reachable(DEFAULT_URL):
        yield DEFAULT_URL
        return
    try:
        started = _start_server()
    except OSError as exc:
        skip_or_fail(f"no Redis at 127.0.0.1:6379 and a throwaway redis-server failed to start: {exc}")
    if started is None:
        skip_or_fail(
            "no Redis at 127.0.0.1:6379 and no working `redis-server` binary to start one "
            "(install redis-server or set MEDCYCLE_TEST_REDIS_URL)"
        )
    url, proc, tmp = started
    try:
        yield url
    finally:
        _stop(proc, tmp)
