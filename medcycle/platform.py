"""``Platform(settings)``: owns the engine, the object store and the job queue; every interface gets one.

Nothing is opened until first used, so building a Platform is cheap and never touches the network.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from medcycle.errors import BackendUnavailable, ConfigError, MedcycleError
from medcycle.jobs.base import JobQueue
from medcycle.objects.base import ObjectStore
from medcycle.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InitResult:
    home: str
    database: str
    schema_revision: str
    admin_created: bool
    admin_token: str | None


@dataclass(frozen=True, slots=True)
class BackendHealth:
    name: str
    url: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "ok": self.ok, "detail": self.detail}


def redact(url: str) -> str:
    """A URL with any password replaced, for display and logs."""
    from sqlalchemy.engine import make_url

    try:
        if "://" in url and "@" in url:
            return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - display helper; fall back to a generic mask
        return url.split("@")[-1]
    return url


class Platform:
    """The running system's resources, built from :class:`~medcycle.settings.Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- resources, opened lazily --------------------------------------------------------------------
    @cached_property
    def engine(self) -> Engine:
        from medcycle.store.engine import create_engine_for

        return create_engine_for(self.settings.resolved_database_url)

    @cached_property
    def _write_engine(self) -> Engine:
        """The same engine and pool, with transactions that begin with ``BEGIN IMMEDIATE`` on SQLite (lazily,
        at the session's first statement)."""
        from medcycle.store.engine import IMMEDIATE

        return self.engine.execution_options(**{IMMEDIATE: True})

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        from medcycle.store.engine import session_factory

        return session_factory(self.engine)

    @cached_property
    def objects(self) -> ObjectStore:
        from medcycle.objects.factory import open_object_store

        return open_object_store(self.settings.resolved_object_store_url, self.settings)

    @cached_property
    def jobs(self) -> JobQueue:
        from medcycle.jobs.factory import open_job_queue

        return open_job_queue(self.settings, self.engine)

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on any error.

        Args:
            write: the unit may write. On SQLite it then starts with ``BEGIN IMMEDIATE`` (at its first
                statement), taking the write lock up front and waiting for it (``busy_timeout``): a deferred
                transaction that reads and then writes is refused at once ("database is locked") when
                another writer committed in between. Pass ``write=False`` for pure reads, which never wait.
        """
        session = self.sessions(bind=self._write_engine) if write else self.sessions()
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            raise BackendUnavailable(
                f"the metadata store failed: {exc.orig}",
                hint="Run `medcycle doctor`; if the schema is missing run `medcycle init`.",
            ) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # -- lifecycle -----------------------------------------------------------------------------------
    def migrate(self) -> str:
        """Apply pending migrations; returns the schema revision."""
        from medcycle.store.migrate import current_revision, upgrade

        upgrade(self.engine)
        return current_revision(self.engine) or "base"

    def init(self, *, admin_name: str = "admin") -> InitResult:
        """Create the home, apply migrations and, on an empty store, a local admin with a token."""
        from medcycle.auth import audit, users
        from medcycle.auth.roles import Role
        from medcycle.auth.tables import UserRow

        try:
            self.settings.home.mkdir(parents=True, exist_ok=True)
            os.chmod(self.settings.home, 0o700)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the home folder {self.settings.home}: {exc.strerror}",
                hint="Set MEDCYCLE_HOME to a writable folder.",
            ) from exc
        revision = self.migrate()
        _ = self.objects  # creates the local store folders / checks the bucket
        token: str | None = None
        with self.session() as session:
            has_users = session.scalar(select(func.count()).select_from(UserRow)) or 0
            if not has_users:
                users.create_user(session, admin_name, Role.ADMIN)
                token = users.create_token(session, admin_name, name="init").secret
                audit.record(session, "system", "user.create", target_kind="user", target_id=admin_name, role="admin")
        return InitResult(
            home=str(self.settings.home),
            database=redact(self.settings.resolved_database_url),
            schema_revision=revision,
            admin_created=token is not None,
            admin_token=token,
        )

    def health(self) -> list[BackendHealth]:
        """Reachability of each backend in use (for ``/readyz`` and ``medcycle doctor``)."""
        return [check() for _, check in self.health_checks()]

    def health_checks(self) -> list[tuple[str, Callable[[], BackendHealth]]]:
        """The checks :meth:`health` runs, by backend name, for a caller that bounds how long each may take."""
        return [("database", self._database_health), ("objects", self._objects_health), ("jobs", self._jobs_health)]

    def _database_health(self) -> BackendHealth:
        db_url = redact(self.settings.resolved_database_url)
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            from medcycle.store.migrate import current_revision, head_revision

            rev, head = current_revision(self.engine), head_revision()
            ok = rev == head
            return BackendHealth("database", db_url, ok,
                                 f"schema {rev or 'empty'}" + ("" if ok else f", head is {head}: run `medcycle init`"))
        except (OperationalError, MedcycleError) as exc:
            return BackendHealth("database", db_url, False, str(getattr(exc, "orig", exc)))

    def _objects_health(self) -> BackendHealth:
        try:
            store = self.objects
            next(iter(store.list()), None)
            return BackendHealth("objects", store.url, True, type(store).__name__)
        except MedcycleError as exc:
            return BackendHealth("objects", self.settings.resolved_object_store_url, False, exc.message)

    def _jobs_health(self) -> BackendHealth:
        try:
            self.jobs.ping()
            return BackendHealth("jobs", redact(self.settings.queue_url), True, type(self.jobs).__name__)
        except MedcycleError as exc:
            return BackendHealth("jobs", redact(self.settings.queue_url), False, exc.message)

    def close(self) -> None:
        if "jobs" in self.__dict__:
            self.jobs.close()
        if "objects" in self.__dict__:
            self.objects.close()
        if "engine" in self.__dict__:
            self.engine.dispose()

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
