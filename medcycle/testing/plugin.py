"""The pytest plugin medcycle's own tests use (``pytest_plugins = ["medcycle.testing.plugin"]``).

Other projects can use it too to test code built on medcycle.
"""

from __future__ import annotations

from medcycle.testing.browser import live_server
from medcycle.testing.platform import db_url, platform, sqlite_platform
from medcycle.testing.postgres import postgres_server, postgres_url
from medcycle.testing.redis import redis_url
from medcycle.testing.s3 import s3_bucket, s3_service
from medcycle.testing.schema import sqlite_schema_template

__all__ = [
    "db_url",
    "live_server",
    "platform",
    "postgres_server",
    "postgres_url",
    "redis_url",
    "s3_bucket",
    "s3_service",
    "sqlite_platform",
    "sqlite_schema_template",
]
