"""A real PostgreSQL for tests: ``MEDCYCLE_TEST_POSTGRES_URL``, the local server, or a throwaway cluster.

Each test gets its own database, cloned from a migrated template (``CREATE DATABASE … TEMPLATE``),
so tests are isolated and fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from medcycle.testing.services import free_port, skip_or_fail, wait_for_port

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class PostgresServer:
    """An admin connection URL (to the ``postgres`` database) and helpers to make test databases."""

    admin_url: str
    _template: str | None = None

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
        return self._template


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
    """A fresh, migrated database for one test."""
    name = postgres_server.create_database(template=postgres_server.migrated_template())
    try:
        yield postgres_server.url_for(name)
    finally:
        postgres_server.drop_database(name)
