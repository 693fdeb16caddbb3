"""Migrations from the first schema: a store made at ``0001`` with data in it is upgraded step by step to head.

Every step is applied, undone (its ``downgrade``) and applied again; the rows written at ``0001`` through raw SQL
must come through every step unchanged and be readable by today's code (a token still logs in, a queued job
is still taken). At head the schema must match the declared tables, as a fresh ``init`` does
(``tests/core/test_store.py::test_migrations_match_the_declared_tables``).

Migrations whose ``downgrade`` cannot restore the schema must be listed in :data:`IRREVERSIBLE` with the reason;
today every step is reversible.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, Engine, bindparam, inspect, select, text
from sqlalchemy.orm import Session

from medcycle.store.base import UTCDateTime
from medcycle.store.engine import create_engine_for
from medcycle.store.migrate import alembic_config, alembic_config_stub, current_revision, head_revision

# revision -> why its downgrade is not run (none today; a data migration that cannot be undone goes here)
IRREVERSIBLE: dict[str, str] = {}

AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
LATER = datetime(2026, 1, 3, 10, 0, 0, tzinfo=UTC)
TOKEN_ID = "0" * 31 + "1"
TOKEN_SECRET = "first-schema-secret"
USER_ID = "u" * 32
JOB_ID = "j" * 32
DIGEST = hashlib.sha256(b"an object stored at 0001").hexdigest()
DETAILS = {"file": "x.dcm", "sizes": [1, 2, 3], "nested": {"ok": True}, "text": "naïve — ünïcode"}
PAYLOAD = {"model": "chest@production", "inputs": ["a" * 64], "params": {"threshold": 0.5}}


def revisions() -> list[str]:
    """Every revision from the first to head, in order (one linear chain)."""
    script = ScriptDirectory.from_config(alembic_config_stub())
    chain = [r.revision for r in script.walk_revisions("base", "heads")]
    chain.reverse()
    assert chain[0] == "0001" and chain[-1] == head_revision(), chain
    return chain


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty database: no tables, no revision."""
    if request.param == "sqlite":
        engine = create_engine_for(f"sqlite:///{tmp_path / 'upgrade.db'}")
        try:
            yield engine
        finally:
            engine.dispose()
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()  # fresh, not from the migrated template
    engine = create_engine_for(server.url_for(name))
    try:
        yield engine
    finally:
        engine.dispose()
        server.drop_database(name)


def _insert(conn: Any, sql: str, values: dict[str, Any], *, times: tuple[str, ...] = (),
            json: tuple[str, ...] = ()) -> None:
    stmt = text(sql).bindparams(*(bindparam(k, type_=UTCDateTime()) for k in times),
                                *(bindparam(k, type_=JSON()) for k in json))
    conn.execute(stmt, values)


def seed_first_schema(engine: Engine) -> None:
    """Representative rows in every table of ``0001``, written with raw SQL as that schema had them."""
    with engine.begin() as conn:
        _insert(conn, "INSERT INTO users (id, name, email, role, disabled, created_at) "
                      "VALUES (:id, :name, :email, :role, :disabled, :at)",
                {"id": USER_ID, "name": "first-admin", "email": "admin@example.org", "role": "admin",
                 "disabled": False, "at": AT}, times=("at",))
        _insert(conn, "INSERT INTO tokens (id, user_id, name, secret_hash, created_at, expires_at, last_used_at, "
                      "revoked_at) VALUES (:id, :user, :name, :hash, :at, NULL, :used, NULL)",
                {"id": TOKEN_ID, "user": USER_ID, "name": "cli", "at": AT, "used": LATER,
                 "hash": hashlib.sha256(TOKEN_SECRET.encode()).hexdigest()}, times=("at", "used"))
        _insert(conn, "INSERT INTO audit_events (at, actor, action, target_kind, target_id, outcome, via, details, "
                      "message) VALUES (:at, :actor, :action, :kind, :target, :outcome, :via, :details, :message)",
                {"at": AT, "actor": "first-admin", "action": "data.ingest", "kind": "instance", "target": "1.2.3",
                 "outcome": "ok", "via": "cli", "details": DETAILS, "message": "ingested before any upgrade"},
                times=("at",), json=("details",))
        _insert(conn, "INSERT INTO jobs (id, queue, state, priority, payload, result, error, idempotency_key, "
                      "attempts, max_attempts, token, lease_owner, lease_expires_at, available_at, deadline, "
                      "cancel_requested, created_at, updated_at, finished_at) VALUES (:id, 'inference', 'queued', 3, "
                      ":payload, NULL, NULL, 'first-key', 0, 5, NULL, NULL, NULL, :at, NULL, :cancel, :at, :at, NULL)",
                {"id": JOB_ID, "payload": PAYLOAD, "at": AT, "cancel": False}, times=("at",), json=("payload",))
        _insert(conn, "INSERT INTO object_refs (digest, owner_kind, owner_id, size, created_at) "
                      "VALUES (:digest, 'dataset_version', 'dv-1', :size, :at)",
                {"digest": DIGEST, "size": 5 * 1024**3, "at": AT}, times=("at",))  # > 2**31: a BigInteger


def check_first_rows(engine: Engine, step: str) -> None:
    """The ``0001`` rows as they were written, read with today's table definitions."""
    from medcycle.auth.tables import AuditEventRow, TokenRow, UserRow
    from medcycle.jobs.tables import JobRow
    from medcycle.objects.tables import ObjectRefRow

    with Session(engine) as s:
        user = s.get(UserRow, USER_ID)
        assert user is not None, f"after {step}: the user is gone"
        assert (user.name, user.email, user.role, user.disabled, user.created_at) == (
            "first-admin", "admin@example.org", "admin", False, AT), step
        token = s.get(TokenRow, TOKEN_ID)
        assert token is not None and token.user_id == USER_ID and token.last_used_at == LATER, step
        events = s.scalars(select(AuditEventRow)).all()
        assert [(e.actor, e.action, e.details, e.message, e.at) for e in events] == [
            ("first-admin", "data.ingest", DETAILS, "ingested before any upgrade", AT)], step
        jobs = s.scalars(select(JobRow)).all()
        assert [(j.id, j.state, j.priority, j.payload, j.idempotency_key) for j in jobs] == [
            (JOB_ID, "queued", 3, PAYLOAD, "first-key")], step
        refs = s.scalars(select(ObjectRefRow)).all()
        assert [(r.digest, r.owner_kind, r.owner_id, r.size) for r in refs] == [
            (DIGEST, "dataset_version", "dv-1", 5 * 1024**3)], step


def test_upgrade_from_the_first_schema_step_by_step(empty_engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from medcycle.store.base import Base
    from medcycle.store.registry import import_all_tables

    chain = revisions()
    cfg = alembic_config(empty_engine)
    command.upgrade(cfg, "0001")
    assert current_revision(empty_engine) == "0001"
    first_tables = set(inspect(empty_engine).get_table_names()) - {"alembic_version"}
    assert first_tables == {"users", "tokens", "audit_events", "jobs", "object_refs"}
    seed_first_schema(empty_engine)
    check_first_rows(empty_engine, "0001")

    tables = first_tables
    for previous, revision in itertools.pairwise(chain):
        command.upgrade(cfg, revision)
        assert current_revision(empty_engine) == revision
        after = set(inspect(empty_engine).get_table_names()) - {"alembic_version"}
        assert tables <= after, f"{revision} dropped tables {sorted(tables - after)}"
        check_first_rows(empty_engine, f"upgrade to {revision}")
        if revision in IRREVERSIBLE:
            assert IRREVERSIBLE[revision].strip(), f"say why {revision} cannot be downgraded"
        else:
            command.downgrade(cfg, previous)
            assert current_revision(empty_engine) == previous
            undone = set(inspect(empty_engine).get_table_names()) - {"alembic_version"}
            assert undone == tables, f"downgrade of {revision} left {sorted(undone ^ tables)}"
            check_first_rows(empty_engine, f"downgrade of {revision}")
            command.upgrade(cfg, revision)  # and again: the downgrade left a schema the step applies to
            assert set(inspect(empty_engine).get_table_names()) - {"alembic_version"} == after
            check_first_rows(empty_engine, f"re-upgrade to {revision}")
        tables = after

    assert current_revision(empty_engine) == head_revision()
    import_all_tables()
    with empty_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"stepwise upgrade and the declared tables disagree: {diff}"


def test_first_schema_data_works_with_todays_code(empty_engine: Engine, tmp_path: Path) -> None:
    """After the upgrade the token written at 0001 still logs in and the job written then is still taken."""
    from medcycle.auth.users import authenticate
    from medcycle.jobs.sql import SqlJobQueue

    command.upgrade(alembic_config(empty_engine), "0001")
    seed_first_schema(empty_engine)
    command.upgrade(alembic_config(empty_engine), "head")
    with Session(empty_engine) as s:
        principal = authenticate(s, f"mct_{TOKEN_ID}_{TOKEN_SECRET}")
        assert (principal.name, principal.role.value) == ("first-admin", "admin")
        s.commit()
    queue = SqlJobQueue(empty_engine, lease_seconds=5)
    taken = queue.take("inference", worker="upgrade-test", max_jobs=1)
    assert [(j.id, j.payload) for j in taken] == [(JOB_ID, PAYLOAD)]
    queue.complete(taken[0], {"ok": True})
    assert queue.get(JOB_ID).state.value == "succeeded"
