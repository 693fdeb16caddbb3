"""Engines for SQLite (WAL, tuned pragmas) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from medcycle.errors import ConfigError

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",  # readers never block the writer
    "PRAGMA synchronous=NORMAL",  # durable at checkpoints; safe with WAL
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",  # wait for the write lock instead of failing at once
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-65536",  # 64 MiB page cache
    "PRAGMA mmap_size=1073741824",  # read pages through a 1 GiB memory map: no read() per page on large catalogs
)

#: Connection execution option: start the transaction with BEGIN IMMEDIATE on SQLite (takes the
#: write lock up front, so read-then-write transactions cannot deadlock on lock upgrade).
IMMEDIATE = "medcycle_begin_immediate"


def normalise_url(url: str) -> URL:
    """Parse ``url`` and pick psycopg 3 for plain ``postgresql://`` URLs."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"database_url {url!r} is not a database URL",
            hint="Use sqlite:///path/to/file.db or postgresql://user@host:5432/dbname.",
        ) from exc
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ConfigError(
            f"database backend {parsed.get_backend_name()!r} is not supported",
            hint="Use SQLite (the default) or PostgreSQL.",
        )
    return parsed


def create_engine_for(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the pragmas and pool settings medcycle relies on."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa_create_engine(
            parsed, connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None}, **kwargs
        )
        _install_sqlite_hooks(engine)
        return engine
    return sa_create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20, **kwargs)


def _install_sqlite_hooks(engine: Engine) -> None:
    # pysqlite's own transaction handling is switched off (isolation_level=None) so that we emit
    # BEGIN ourselves: this is the documented way to get correct SERIALIZABLE/IMMEDIATE behaviour.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
