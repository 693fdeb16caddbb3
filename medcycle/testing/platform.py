"""Platform fixtures: a throwaway home on SQLite or PostgreSQL (every DB test runs on both)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medcycle.platform import Platform
from medcycle.settings import Settings, load_settings

TEST_SECRET = "test-secret-" + "x" * 40


def make_settings(home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"home": home, "environment": "test", "secret_key": TEST_SECRET}
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty metadata store URL; the test runs once per database backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'medcycle.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def platform(tmp_path: Path, db_url: str) -> Iterator[Platform]:
    """A platform on a temporary home, local object store, embedded queue; initialised."""
    p = Platform(make_settings(tmp_path / "home", database_url=db_url))
    p.init()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def sqlite_platform(tmp_path: Path) -> Iterator[Platform]:
    """SQLite only, for tests that exercise no database behaviour of their own."""
    p = Platform(make_settings(tmp_path / "home"))
    p.init()
    try:
        yield p
    finally:
        p.close()
