"""The suite's PostgreSQL databases (medcycle.testing.postgres): a database a test is done with reaches the next
test emptied, with the template's schema — and is dropped instead where that cannot be promised."""

from __future__ import annotations

import psycopg
import pytest

from medcycle.testing.postgres import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> PostgresServer:
    """The session's server with no spare databases, so that the next one taken is the one given back."""
    monkeypatch.delenv("MEDCYCLE_TEST_POSTGRES_FRESH", raising=False)
    with postgres_server._connect() as conn:
        if not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
            pytest.skip("the test server's role is not a superuser: databases are dropped, never emptied")
    postgres_server.drop_spares()
    return postgres_server


def _exists(server: PostgresServer, name: str) -> bool:
    with server._connect() as conn:
        return bool(conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0])


def _rows(server: PostgresServer, name: str) -> dict[str, int]:
    """Rows per table of ``name`` (tables that have any), the schema revision's included."""
    with psycopg.connect(server.url_for(name), autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    return {t: n for t, n in counts.items() if n}


def test_a_used_database_reaches_the_next_test_empty(server: PostgresServer) -> None:
    name = server.take_database()
    with psycopg.connect(server.url_for(name), autocommit=True) as conn:
        assert conn.execute("SELECT nextval('jobs_seq_seq')").fetchone()[0] == 1
        conn.execute("INSERT INTO users (id, name, email, role, disabled, created_at) "
                     "VALUES ('u1', 'someone', NULL, 'admin', false, now())")
        conn.execute("INSERT INTO tokens (id, user_id, name, secret_hash, created_at) "
                     "VALUES ('t1', 'u1', 'cli', 'x', now())")  # a row that refers to another: deleted too
    assert set(_rows(server, name)) == {"alembic_version", "users", "tokens"}
    before = server.recycled
    server.give_back(name)
    assert server.recycled == before + 1
    again = server.take_database()
    assert again != name and not _exists(server, name)  # renamed: a client of the last test cannot reach it
    assert _rows(server, again) == {"alembic_version": 1}
    with psycopg.connect(server.url_for(again), autocommit=True) as conn:
        assert conn.execute("SELECT nextval('jobs_seq_seq')").fetchone()[0] == 1  # sequences restarted
    server.give_back(again)


def test_a_changed_schema_is_dropped_not_handed_on(server: PostgresServer) -> None:
    name = server.take_database()
    with psycopg.connect(server.url_for(name), autocommit=True) as conn:
        conn.execute("CREATE INDEX extra ON users (email)")
    server.give_back(name)
    assert not _exists(server, name)
    name = server.take_database()
    with psycopg.connect(server.url_for(name), autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")  # a test that downgraded
    server.give_back(name)
    assert not _exists(server, name)
    name = server.take_database()
    with psycopg.connect(server.url_for(name), autocommit=True) as conn:
        conn.execute("ALTER TABLE users ALTER COLUMN email SET DEFAULT 'someone@example.org'")  # a default only
    server.give_back(name)
    assert not _exists(server, name)


def test_a_database_still_in_use_is_dropped(server: PostgresServer) -> None:
    name = server.take_database()
    with psycopg.connect(server.url_for(name), autocommit=True) as leaked:
        leaked.execute("SELECT 1")
        server.give_back(name)  # drops it, closing the connection a test left open (FORCE)
        assert not _exists(server, name)
    assert server.take_database() != name
