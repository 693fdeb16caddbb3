"""The job-queue contract on Redis Streams, plus what only the Redis backend has (URLs, outages)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis

from medcycle.errors import BackendUnavailable, ConfigError
from medcycle.jobs.factory import open_job_queue
from medcycle.jobs.redis_streams import RedisJobQueue
from medcycle.settings import load_settings
from medcycle.testing.redis import redis_url  # noqa: F401 - the fixture
from medcycle.testing.services import free_port
from tests.jobs.contract import QueueContract, WorkerCommand

pytestmark = pytest.mark.integration


def with_prefix(url: str, prefix: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("key_prefix", prefix)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def drop_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:  # noqa: F811 - redis_url is the imported fixture
    prefix = f"medcycle-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        drop_keys(redis_url, prefix)


class TestRedisQueue(QueueContract):
    @pytest.fixture
    def jq(self, redis_url: str, key_prefix: str) -> Iterator[RedisJobQueue]:  # noqa: F811
        queue = RedisJobQueue(redis_url, lease_seconds=1.0, max_attempts=5, limit=50, key_prefix=key_prefix)
        try:
            yield queue
        finally:
            queue.close()

    @pytest.fixture
    def worker_cmd(self, redis_url: str, key_prefix: str, tmp_path: Path) -> WorkerCommand:  # noqa: F811
        argv = [
            sys.executable,
            "-m",
            "medcycle.testing.job_worker",
            "--queue-url",
            with_prefix(redis_url, key_prefix),
        ]
        return argv, {"MEDCYCLE_HOME": str(tmp_path / "home")}


def test_factory_opens_redis_with_the_prefix_from_the_url(redis_url: str, key_prefix: str) -> None:  # noqa: F811
    settings = load_settings(
        queue_url=with_prefix(redis_url, key_prefix), job_lease_seconds=2.5, job_queue_limit=7
    )
    jq = open_job_queue(settings)
    try:
        assert isinstance(jq, RedisJobQueue)
        assert jq.prefix == key_prefix
        assert (jq.lease_seconds, jq.limit) == (2.5, 7)
        jq.ping()
        job = jq.enqueue("factory", {"n": 1})
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.exists(f"{key_prefix}job:{job.id}") == 1
        finally:
            client.close()
    finally:
        jq.close()


def test_unreachable_redis_is_backend_unavailable() -> None:
    jq = RedisJobQueue(f"redis://:secret@127.0.0.1:{free_port()}/0", lease_seconds=1.0)
    try:
        with pytest.raises(BackendUnavailable) as info:
            jq.ping()
        assert info.value.hint
        assert "secret" not in str(info.value)
        with pytest.raises(BackendUnavailable):
            jq.enqueue("q", {})
        with pytest.raises(BackendUnavailable):
            jq.take("q", "w1", wait_ms=100)
    finally:
        jq.close()


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        RedisJobQueue("redis://127.0.0.1:notaport/0")
