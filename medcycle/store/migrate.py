"""Alembic migrations, driven from code (``medcycle init`` and every start apply them)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from medcycle.errors import BackendUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


@cache
def head_revision() -> str:
    """The newest revision of the migrations shipped with this code (read once: they do not change while it
    runs; reading them cost ~20 ms at every start and health check)."""
    head = ScriptDirectory.from_config(alembic_config_stub()).get_current_head()
    return head or "base"


def alembic_config_stub() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``; safe to call on every start."""
    try:
        if current_revision(engine) == head_revision() and revision == "head":
            return
        command.upgrade(alembic_config(engine), revision)
    except OperationalError as exc:
        raise BackendUnavailable(
            f"cannot migrate the metadata store: {exc.orig}",
            hint="Check database_url and that the database server is running (`medcycle doctor`).",
        ) from exc
