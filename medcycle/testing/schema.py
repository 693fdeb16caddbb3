"""A migrated SQLite schema made once per test session and copied into each new test database.

Applying every Alembic migration to a new SQLite file costs a few tenths of a second (each migration module is
loaded and its tables built), and the suite makes a fresh home for most tests: about a fifth of its time went
there. :func:`sqlite_schema_template` (session-scoped, autouse) migrates one database with the real
:func:`medcycle.store.migrate.upgrade` and, for the rest of the session, answers ``upgrade(engine)`` on an
*empty* SQLite file with a page-by-page copy of that one (SQLite's online backup, through the engine's own
connection), which leaves exactly what the migrations leave. Everything else — PostgreSQL (already cloned from a
migrated template, :mod:`medcycle.testing.postgres`), a database that already has tables (an upgrade from an
older revision), another target revision, in-memory databases, and migrations run through Alembic's own
``command.upgrade`` — takes the real path. ``MEDCYCLE_TEST_MIGRATE_EACH=1`` turns the copy off for a run.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text


def _file_database(engine: Engine) -> bool:
    database = engine.url.database
    return engine.dialect.name == "sqlite" and bool(database) and database != ":memory:" \
        and not str(database).startswith("file:")


def copy_schema(template: Path, engine: Engine) -> bool:
    """Copy ``template`` into ``engine``'s SQLite database when that one holds nothing yet; True when copied."""
    with engine.connect() as conn:
        if conn.execute(text("SELECT count(*) FROM sqlite_master")).scalar_one():
            return False
        conn.rollback()  # the count opened a transaction: a backup needs the destination idle
        target = conn.connection.driver_connection
        if not isinstance(target, sqlite3.Connection):  # another SQLite driver: migrate instead
            return False
        source = sqlite3.connect(template)
        try:
            source.backup(target)
        finally:
            source.close()
    return True


@pytest.fixture(scope="session", autouse=True)
def sqlite_schema_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    """The migrated template's path (None when ``MEDCYCLE_TEST_MIGRATE_EACH`` is set); see the module docstring."""
    if os.environ.get("MEDCYCLE_TEST_MIGRATE_EACH"):
        yield None
        return
    from medcycle.store import migrate
    from medcycle.store.engine import create_engine_for

    real = migrate.upgrade
    template = tmp_path_factory.mktemp("schema") / "migrated.db"
    engine = create_engine_for(f"sqlite:///{template}")
    try:
        real(engine)
    finally:
        engine.dispose()

    def upgrade(engine: Engine, revision: str = "head") -> None:
        if revision == "head" and _file_database(engine) and copy_schema(template, engine):
            return
        real(engine, revision)

    patch = pytest.MonkeyPatch()
    patch.setattr(migrate, "upgrade", upgrade)
    try:
        yield template
    finally:
        patch.undo()
