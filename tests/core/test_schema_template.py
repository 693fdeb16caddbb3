"""The suite's migrated-schema copy (medcycle.testing.schema) leaves what the migrations leave, and only where
they would have started from nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from medcycle.store import migrate
from medcycle.store.engine import create_engine_for
from medcycle.testing import schema as schema_module
from medcycle.testing.schema import copy_schema

SCHEMA = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"


def _dump(path: Path) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], str]:
    """Schema, alembic's revision rows and the journal mode of the SQLite file at ``path``."""
    with sqlite3.connect(path) as conn:
        return (conn.execute(SCHEMA).fetchall(), conn.execute("SELECT * FROM alembic_version").fetchall(),
                conn.execute("PRAGMA journal_mode").fetchone()[0])


def test_a_copied_schema_is_the_migrated_one(tmp_path: Path, sqlite_schema_template: Path | None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = create_engine_for(f"sqlite:///{tmp_path / 'real.db'}")
    command.upgrade(migrate.alembic_config(real), "head")  # Alembic's own command: always every migration
    real.dispose()
    copied = create_engine_for(f"sqlite:///{tmp_path / 'copied.db'}")
    if sqlite_schema_template is None:  # MEDCYCLE_TEST_MIGRATE_EACH: the copy is off, copy_schema still works
        template = tmp_path / "template.db"
        engine = create_engine_for(f"sqlite:///{template}")
        command.upgrade(migrate.alembic_config(engine), "head")
        engine.dispose()
        assert copy_schema(template, copied)
    else:
        copies: list[bool] = []
        original = schema_module.copy_schema

        def spy(template: Path, engine: Any) -> bool:
            copies.append(original(template, engine))
            return copies[-1]

        monkeypatch.setattr(schema_module, "copy_schema", spy)
        migrate.upgrade(copied)  # the session's patched upgrade: copies
        assert copies == [True]
    assert migrate.current_revision(copied) == migrate.head_revision()
    copied.dispose()
    schema, revision, mode = _dump(tmp_path / "copied.db")
    assert (schema, revision) == _dump(tmp_path / "real.db")[:2]
    assert len(schema) > 100 and revision == [(migrate.head_revision(),)]
    assert mode == "wal"


def test_a_database_with_tables_is_never_overwritten(tmp_path: Path, sqlite_schema_template: Path | None) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'old.db'}")
    command.upgrade(migrate.alembic_config(engine), "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, name, email, role, disabled, created_at) "
                          "VALUES ('u1', 'kept', NULL, 'admin', 0, '2026-01-01 00:00:00')"))
    if sqlite_schema_template is not None:
        assert not copy_schema(sqlite_schema_template, engine)
    migrate.upgrade(engine)  # a real upgrade from 0001: the row survives it
    assert migrate.current_revision(engine) == migrate.head_revision()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM users")).scalars().all() == ["kept"]
    engine.dispose()
