from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from medcycle.errors import BackendUnavailable, ConfigError
from medcycle.platform import Platform
from medcycle.store.engine import create_engine_for
from medcycle.store.migrate import current_revision, head_revision, upgrade
from medcycle.testing.platform import make_settings


def test_migrations_reach_head_and_are_idempotent(platform: Platform) -> None:
    assert current_revision(platform.engine) == head_revision()
    platform.migrate()  # again: nothing to do
    tables = set(inspect(platform.engine).get_table_names())
    assert {"users", "tokens", "audit_events", "jobs", "object_refs", "alembic_version"} <= tables


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    upgrade(engine)
    assert current_revision(engine) == head_revision()


def test_bad_database_urls_get_hints(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        create_engine_for("mysql://x@y/z")
    assert "PostgreSQL" in (err.value.hint or "")
    with pytest.raises(ConfigError):
        create_engine_for("not a url")
    p = Platform(make_settings(tmp_path, database_url="postgresql://nobody@127.0.0.1:1/none"))
    with pytest.raises(BackendUnavailable) as unavailable:
        p.migrate()
    assert "medcycle doctor" in (unavailable.value.hint or "")
    health = {h.name: h for h in p.health()}
    assert health["database"].ok is False


def test_platform_health_all_green(platform: Platform) -> None:
    assert all(h.ok for h in platform.health()), platform.health()


def test_migrations_match_the_declared_tables(platform: Platform) -> None:
    """Every table a module declares is created by the migrations, column for column and index for index."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from medcycle.store.base import Base
    from medcycle.store.registry import import_all_tables

    import_all_tables()
    with platform.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
