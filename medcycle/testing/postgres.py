"""A real PostgreSQL for tests: ``MEDCYCLE_TEST_POSTGRES_URL``, the local server, or a throwaway cluster.

Each test gets a database of its own holding exactly the migrated schema and no rows. The first ones are cloned
from a migrated template (``CREATE DATABASE … TEMPLATE``: half a second or more, as every new database copies the
system catalogs and is synced to disk); a database a test is done with is emptied and handed to the next test
instead of dropped (a few tens of milliseconds), but only when nothing else is still connected to it and its
schema is still the template's (compared by a fingerprint: see ``FINGERPRINT``), and under a new name, so that a
client the last test left behind cannot reach it. Otherwise, or when emptying fails (a server that refuses to
disable triggers to a non-superuser: then every database is dropped), it is dropped as before. What emptying
leaves that a fresh clone would not: dead row versions and the planner's statistics of the last test's rows.
``MEDCYCLE_TEST_POSTGRES_FRESH=1`` drops every one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from medcycle.testing.services import free_port, skip_or_fail, wait_for_port

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# What a test could change in a database beyond its rows: relations and their columns (indexes, sequences and
# views too) with their defaults, constraints, index and view definitions, functions (their bodies), triggers
# (enabled or not), enum labels, schemas, extensions, large objects and the schema revision.
FINGERPRINT = """
SELECT md5(concat_ws('|',
  (SELECT string_agg(c.relname || ':' || c.relkind::text || ':' || c.relpersistence::text || ':'
                     || c.relrowsecurity::text || ':' || coalesce(a.attname, '') || ':'
                     || coalesce(format_type(a.atttypid, a.atttypmod), '') || ':' || coalesce(a.attnotnull::text, '')
                     || ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
                     ',' ORDER BY c.relname, a.attnum)
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
      AND n.nspname NOT LIKE 'pg_temp%'),
  (SELECT string_agg(conrelid::regclass::text || ':' || conname || ':' || pg_get_constraintdef(oid), ','
                     ORDER BY conrelid::regclass::text, conname)
     FROM pg_constraint WHERE connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)),
  (SELECT string_agg(pg_get_indexdef(i.indexrelid), ',' ORDER BY pg_get_indexdef(i.indexrelid))
     FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'),
  (SELECT string_agg(c.relname || ':' || pg_get_viewdef(c.oid), ',' ORDER BY c.relname)
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')),
  (SELECT string_agg(n.nspname, ',' ORDER BY n.nspname) FROM pg_namespace n),
  (SELECT string_agg(p.proname || ':' || md5(coalesce(p.prosrc, '')), ',' ORDER BY p.proname, p.prosrc)
     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')),
  (SELECT string_agg(pg_get_triggerdef(t.oid) || ':' || t.tgenabled::text, ',' ORDER BY t.tgname)
     FROM pg_trigger t WHERE NOT t.tgisinternal),
  (SELECT string_agg(e.enumtypid::regtype::text || ':' || e.enumlabel, ',' ORDER BY e.enumtypid, e.enumsortorder)
     FROM pg_enum e),
  (SELECT string_agg(e.extname, ',' ORDER BY e.extname) FROM pg_extension e),
  (SELECT count(*)::text FROM pg_largeobject_metadata),
  (SELECT string_agg(version_num, ',' ORDER BY version_num) FROM alembic_version)))
"""
# clients (another role's sessions show no backend type to a role that may not see them: counted too)
OTHERS = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
          "AND coalesce(backend_type, 'client backend') = 'client backend'")


@dataclass
class PostgresServer:
    """An admin connection URL (to the ``postgres`` database) and helpers to make test databases."""

    admin_url: str
    _template: str | None = None
    _fingerprint: str | None = None
    _spare: list[str] = field(default_factory=list)  # emptied databases with the template's schema
    recycled: int = 0  # databases handed on emptied (for the suite's own check)
    _can_empty: bool = True  # False once the server refused to disable triggers (not a superuser)

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)

    def url_for(self, dbname: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{dbname}"

    def create_database(self, template: str | None = None) -> str:
        name = f"medcycle_test_{uuid.uuid4().hex[:12]}"
        with self._connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def drop_database(self, name: str) -> None:
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def migrated_template(self) -> str:
        """A database with the current schema applied, made once per session."""
        if self._template is None:
            from medcycle.store.engine import create_engine_for
            from medcycle.store.migrate import upgrade

            name = self.create_database()
            engine = create_engine_for(self.url_for(name))
            try:
                upgrade(engine)
            finally:
                engine.dispose()
            self._template = name
            with self._connect_to(name) as conn:
                self._fingerprint = conn.execute(FINGERPRINT).fetchone()[0]
        return self._template

    def _connect_to(self, dbname: str) -> Any:
        import psycopg

        return psycopg.connect(self.url_for(dbname), autocommit=True, connect_timeout=5)

    def take_database(self) -> str:
        """A database with the migrated schema and no rows: an emptied one when there is one, else a new clone."""
        if self._spare:
            return self._spare.pop()
        return self.create_database(template=self.migrated_template())

    def give_back(self, name: str) -> None:
        """Empty ``name`` for the next test where that is safe (see the module docstring), else drop it. An emptied
        database is renamed before it is handed on — which PostgreSQL refuses while anyone is connected, and after
        which a client of the last test that reconnects finds no database."""
        if os.environ.get("MEDCYCLE_TEST_POSTGRES_FRESH") or not self._can_empty or not self._empty(name):
            self.drop_database(name)
            return
        fresh = f"medcycle_test_{uuid.uuid4().hex[:12]}"
        try:
            with self._connect() as conn:
                conn.execute(f'ALTER DATABASE "{name}" RENAME TO "{fresh}"')
        except Exception:  # noqa: BLE001 - someone connected meanwhile (or any other refusal): drop it instead
            self.drop_database(name)
            return
        self._spare.append(fresh)
        self.recycled += 1

    def _empty(self, name: str) -> bool:
        """Delete every row of ``name`` (but the schema revision) and restart its sequences; False (nothing
        promised) when another connection is open, the schema is no longer the template's, or it fails."""
        import psycopg

        try:
            with self._connect_to(name) as conn:
                until = time.monotonic() + 0.1  # a client that just closed may take a moment to leave
                while conn.execute(OTHERS).fetchone()[0]:
                    if time.monotonic() > until:
                        return False
                    time.sleep(0.01)
                if conn.execute(FINGERPRINT).fetchone()[0] != self._fingerprint:
                    return False
                tables = [row[0] for row in conn.execute(
                    "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
                    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND tablename <> 'alembic_version'")]
                with conn.transaction():
                    conn.execute("SET LOCAL lock_timeout = '5s'")  # a prepared transaction's locks: fail, drop
                    try:
                        conn.execute("SET LOCAL session_replication_role = replica")  # no foreign-key order to keep
                    except psycopg.errors.InsufficientPrivilege:
                        self._can_empty = False  # not a superuser: drop every database, as before
                        raise
                    for table in tables:
                        conn.execute(f"DELETE FROM {table}")
                    conn.execute("SELECT setval(s.seqrelid, s.seqstart, false) FROM pg_sequence s")
                return True
        except psycopg.Error:
            return False

    def drop_spares(self) -> None:
        while self._spare:
            self.drop_database(self._spare.pop())


def _reachable(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return False


def _start_cluster() -> tuple[str, subprocess.Popen[bytes] | None, Path] | None:
    """initdb + postgres on a free port in a temp dir (as the postgres OS user when run as root)."""
    bindir = None
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            bindir = candidate
    initdb = str(bindir / "initdb") if bindir else shutil.which("initdb")
    postgres = str(bindir / "postgres") if bindir else shutil.which("postgres")
    if not initdb or not postgres:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="medcycle-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if not runuser:
            return None
        shutil.chown(tmp, "postgres")
        prefix = [runuser, "-u", "postgres", "--"]
    data = tmp / "data"
    subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen(
        [*prefix, postgres, "-D", str(data), "-p", str(port), "-k", str(tmp), "-h", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    if not wait_for_port("127.0.0.1", port, 30) or not _reachable(url):
        proc.terminate()
        return None
    return url, proc, tmp


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    url = os.environ.get("MEDCYCLE_TEST_POSTGRES_URL")
    started = None
    if url:
        if not _reachable(url):
            skip_or_fail(f"MEDCYCLE_TEST_POSTGRES_URL={url} is not reachable")
    elif _reachable(DEFAULT_URL):
        url = DEFAULT_URL
    else:
        try:
            started = _start_cluster()
        except (OSError, subprocess.CalledProcessError) as exc:
            skip_or_fail(f"no PostgreSQL at 127.0.0.1:5432 and a throwaway cluster failed to start: {exc}")
        if started is None:
            skip_or_fail("no PostgreSQL at 127.0.0.1:5432 and no initdb/postgres binaries to start one")
        url = started[0]
    server = PostgresServer(url)
    try:
        yield server
    finally:
        server.drop_spares()
        if server._template:
            server.drop_database(server._template)
        if started is not None:
            _, proc, tmp = started
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A migrated database of the test's own, with no rows (see the module docstring)."""
    name = postgres_server.take_database()
    try:
        yield postgres_server.url_for(name)
    finally:
        postgres_server.give_back(name)
