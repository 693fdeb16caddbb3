"""Pick a job-queue backend by URL: ``embedded`` (SQL table in the metadata store) or ``redis://``."""

from __future__ import annotations

from urllib.parse import urlparse

from sqlalchemy import Engine

from medcycle.errors import ConfigError
from medcycle.jobs.base import JobQueue
from medcycle.settings import Settings


def open_job_queue(settings: Settings, engine: Engine | None = None) -> JobQueue:
    """Open the queue backend named by ``settings.queue_url``.

    Args:
        settings: supplies the URL, lease length, attempt limit and queue bound.
        engine: the metadata store engine, required for the embedded backend.
    """
    url = settings.queue_url
    scheme = urlparse(url).scheme.lower()
    if url in {"embedded", "sql", ""}:
        from medcycle.jobs.sql import SqlJobQueue

        if engine is None:
            raise ConfigError("the embedded job queue needs the metadata store engine")
        return SqlJobQueue(
            engine,
            lease_seconds=settings.job_lease_seconds,
            max_attempts=settings.job_max_attempts,
            limit=settings.job_queue_limit,
        )
    if scheme in {"redis", "rediss", "unix"}:
        from medcycle.jobs.redis_streams import RedisJobQueue

        return RedisJobQueue(
            url,
            lease_seconds=settings.job_lease_seconds,
            max_attempts=settings.job_max_attempts,
            limit=settings.job_queue_limit,
        )
    raise ConfigError(
        f"queue_url {url!r} is not supported", hint="Use `embedded` (the default) or redis://host:6379/0."
    )
