"""Metadata store: SQLAlchemy 2 engine, declarative base and Alembic migrations."""

from medcycle.store.base import Base, utcnow
from medcycle.store.engine import create_engine_for, session_factory
from medcycle.store.migrate import current_revision, head_revision, upgrade

__all__ = ["Base", "create_engine_for", "current_revision", "head_revision", "session_factory", "upgrade", "utcnow"]
