"""Alembic environment: runs on the engine the platform hands over (never reads alembic.ini)."""

from __future__ import annotations

from alembic import context

from medcycle.store.base import Base
from medcycle.store.registry import import_all_tables

import_all_tables()
config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
