"""The rollup's triggers exist for SQLite and PostgreSQL; any other database is a configuration error with a hint."""

from __future__ import annotations

import pytest

from medcycle.catalog.rollup import trigger_ddl
from medcycle.errors import ConfigError


def test_supported_dialects_have_triggers() -> None:
    assert trigger_ddl("sqlite") and trigger_ddl("postgresql")


def test_another_database_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no triggers for the mysql database") as info:
        trigger_ddl("mysql")
    assert "SQLite or PostgreSQL" in (info.value.hint or "")
