"""Backup and restore of the metadata store and the objects, consistent while the system runs.

A backup folder holds::

    backup.json        what was backed up: schema revision, database kind, digests, counts, when, by which version
    database.sqlite    SQLite: an online snapshot (the SQLite backup API; writers keep going meanwhile)
    database.pgdump    PostgreSQL: ``pg_dump --format=custom`` (one consistent snapshot)
    objects/           the object store's content, by digest (a local object store: every copy verified)

The database is snapshotted **first**, the objects copied **after**: objects are immutable and only ever
added, and ``store gc`` keeps unreferenced objects for a grace period, so every object the snapshot refers to
is still there when it is copied — and the backup checks that, naming any that is not. Backing up into the
same folder again copies only objects it does not hold yet (incremental).

The de-identification key is *not* put into the backup folder: it must live apart from the data (without it,
pseudonyms of later studies no longer re-link; with it, next to the data, the pseudonyms can be recomputed
from identities). ``keys_to`` copies it to a separate place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import URL, Engine, make_url

from medcycle.errors import ConfigError, Conflict, IntegrityError, NotFound, UsageError
from medcycle.objects.base import ObjectStore
from medcycle.objects.local import LocalObjectStore
from medcycle.platform import Platform

FORMAT = 1
MANIFEST = "backup.json"


@dataclass
class BackupReport:
    folder: str
    revision: str
    database: str
    database_bytes: int
    objects_total: int
    objects_copied: int
    bytes_copied: int
    referenced: int
    keys_copied_to: str | None
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RestoreReport:
    folder: str
    revision_in_backup: str
    revision_now: str
    database: str
    objects_restored: int
    objects_present: int
    bytes_restored: int
    key_restored: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _kind(url: URL) -> str:
    backend = url.get_backend_name()
    if backend in {"sqlite", "postgresql"}:
        return backend
    raise ConfigError(f"backups support SQLite and PostgreSQL, not {backend!r}",
                      hint="Back the database up with its own tools, and the objects with `medcycle backup create`.")


def _libpq_url(url: URL) -> str:
    """The URL as pg_dump/pg_restore take it (no SQLAlchemy driver suffix)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise ConfigError(f"{name} is not installed; it backs up and restores PostgreSQL",
                          hint="Install the PostgreSQL client tools of the server's major version "
                               "(Debian: apt-get install postgresql-client).")
    return exe


def _sqlite_file(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise UsageError("an in-memory SQLite database cannot be backed up or restored",
                         hint="Point database_url at a file.")
    return Path(url.database)


def _dump_database(engine: Engine, dest: Path) -> tuple[str, Path]:
    url = engine.url
    kind = _kind(url)
    if kind == "sqlite":
        target = dest / "database.sqlite"
        tmp = target.with_suffix(".partial")
        tmp.unlink(missing_ok=True)
        src = sqlite3.connect(_sqlite_file(url))
        try:
            out = sqlite3.connect(tmp)
            try:
                src.backup(out, pages=4096)  # copies in steps; writers continue, the copy restarts if they wrote
            finally:
                out.close()
        finally:
            src.close()
    else:
        target = dest / "database.pgdump"
        tmp = target.with_suffix(".partial")
        result = subprocess.run([_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
                                 "--file", str(tmp), _libpq_url(url)],
                                capture_output=True, text=True, check=False, timeout=6 * 3600)
        if result.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"pg_dump failed: {result.stderr.strip()[-500:]}",
                              hint="Check that pg_dump's major version is the server's and the URL is reachable.")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(target)
    return kind, target


def _referenced(engine: Engine) -> set[str]:
    from sqlalchemy.orm import Session

    from medcycle.objects.refs import referenced_digests

    if "object_refs" not in inspect(engine).get_table_names():
        return set()
    with Session(engine) as session:
        return referenced_digests(session)


def _snapshot_engine(kind: str, file: Path) -> Engine | None:
    """An engine on the SQLite snapshot itself (PostgreSQL dumps are not opened: the live refs are used)."""
    return create_engine(f"sqlite:///{file}") if kind == "sqlite" else None


def _copy_objects(source: ObjectStore, target: ObjectStore, wanted: list[str]) -> tuple[int, int]:
    copied = bytes_copied = 0
    todo = [d for d in wanted if not target.exists(d)]

    def one(digest: str) -> int:
        with source.open(digest) as raw:  # verified while read: a corrupt source object fails loudly, named
            return target.put(raw, expected_digest=digest).size

    for size in source._parallel(one, todo):
        copied += 1
        bytes_copied += size
    target.sync()
    return copied, bytes_copied


def create_backup(platform: Platform, dest: Path, *, keys_to: Path | None = None) -> BackupReport:
    """Snapshot the database, then copy every object into ``dest`` (incrementally); see the module docstring."""
    from medcycle import __version__
    from medcycle.store.migrate import current_revision

    started = time.perf_counter()
    dest = dest.expanduser().resolve()
    home = platform.settings.home.expanduser().resolve()
    if dest == home or home in dest.parents:
        raise UsageError(f"the backup folder {dest} is inside the home {home}",
                         hint="Back up to another disk or machine; a backup next to the data is lost with it.")
    dest.mkdir(parents=True, exist_ok=True)
    old = dest / MANIFEST
    if old.exists() and json.loads(old.read_text()).get("format") != FORMAT:
        raise Conflict(f"{dest} holds a backup of another format", hint="Use an empty folder.")
    revision = current_revision(platform.engine) or "base"
    kind, db_file = _dump_database(platform.engine, dest)
    snapshot = _snapshot_engine(kind, db_file)
    try:
        referenced = _referenced(snapshot or platform.engine)
    finally:
        if snapshot is not None:
            snapshot.dispose()
    target = LocalObjectStore(dest / "objects", workers=platform.settings.io_workers)
    listed = {info.digest for info in platform.objects.list()}
    missing = sorted(referenced - listed)
    if missing:
        raise IntegrityError(
            f"{len(missing)} object(s) the database refers to are not in the object store, e.g. {missing[0]}",
            hint="Run `medcycle store fsck` to see what is missing; the backup's database snapshot is in "
                 f"{db_file.name} but its objects are incomplete.", missing=missing[:20])
    copied, bytes_copied = _copy_objects(platform.objects, target, sorted(listed))
    warnings = []
    keys_copied: str | None = None
    key_file = platform.settings.resolved_deid_key_file
    if keys_to is not None:
        keys_to = keys_to.expanduser().resolve()
        if keys_to == dest or dest in keys_to.parents:
            raise UsageError("the key must not be stored inside the backup folder",
                             hint="Give --keys-to a separate place (another disk, a vault export folder).")
        if key_file.exists():
            keys_to.mkdir(parents=True, exist_ok=True, mode=0o700)
            out = keys_to / key_file.name
            shutil.copy2(key_file, out)
            out.chmod(0o600)
            keys_copied = str(out)
    elif key_file.exists():
        warnings.append(f"the de-identification key ({key_file.name}) is not in this backup: keep a copy apart "
                        "(--keys-to DIR), or later studies of the same patients will not re-link")
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "medcycle_version": __version__,
        "revision": revision,
        "database": {"kind": kind, "file": db_file.name, "sha256": _sha256(db_file), "bytes": db_file.stat().st_size},
        "objects": {"count": len(listed), "referenced": len(referenced)},
    }
    tmp = dest / (MANIFEST + ".partial")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(dest / MANIFEST)  # written last: a folder without it is an unfinished backup
    return BackupReport(folder=str(dest), revision=revision, database=kind, database_bytes=db_file.stat().st_size,
                        objects_total=len(listed), objects_copied=copied, bytes_copied=bytes_copied,
                        referenced=len(referenced), keys_copied_to=keys_copied,
                        seconds=round(time.perf_counter() - started, 3), warnings=warnings)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.exists():
        raise NotFound(f"{folder} holds no finished backup ({MANIFEST} is missing)",
                       hint="Give the folder `medcycle backup create` wrote; a folder without it is unfinished.")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise UsageError(f"{folder} holds a backup of format {manifest.get('format')!r}, this version reads {FORMAT}")
    return manifest


def _is_empty(engine: Engine) -> bool:
    """No data yet: no schema, or one that ``medcycle init`` just made (an admin, no objects referenced)."""
    from sqlalchemy import text

    if "object_refs" not in inspect(engine).get_table_names():
        return True
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM object_refs LIMIT 1")).first() is None


def restore_backup(
    platform: Platform, src: Path, *, force: bool = False, keys_from: Path | None = None
) -> RestoreReport:
    """Restore a backup into the configured database and object store, then migrate to this version's schema.

    Refuses a database that already holds data unless ``force`` (which replaces it). The objects go in first
    (every one verified; those already present are kept: same digest, same bytes), the database last, so an
    interrupted restore is simply run again.
    """
    started = time.perf_counter()
    src = src.expanduser().resolve()
    manifest = read_manifest(src)
    db = manifest["database"]
    db_file = src / db["file"]
    if not db_file.exists() or _sha256(db_file) != db["sha256"]:
        raise IntegrityError(f"the database file {db_file.name} of the backup is missing or altered",
                             hint="Restore from another backup; this one cannot be trusted.")
    engine = platform.engine
    kind = _kind(engine.url)
    if kind != db["kind"]:
        raise UsageError(f"the backup holds a {db['kind']} database but database_url points at {kind}",
                         hint="Restore into the same kind of database the backup was made from.")
    if not force and not _is_empty(engine):
        raise Conflict("the target database already holds data",
                       hint="Restore into an empty database (a new home or database), or pass --force to replace it.")
    backup_objects = LocalObjectStore(src / "objects", workers=platform.settings.io_workers)
    digests = sorted(info.digest for info in backup_objects.list())
    present = sum(1 for d in digests if platform.objects.exists(d))
    restored, nbytes = _copy_objects(backup_objects, platform.objects, digests)
    engine.dispose()
    if kind == "sqlite":
        target = _sqlite_file(engine.url)
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        source = sqlite3.connect(db_file)
        try:
            out = sqlite3.connect(target)
            try:
                source.backup(out)
            finally:
                out.close()
        finally:
            source.close()
    else:
        result = subprocess.run([_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges",
                                 "--single-transaction", "--dbname", _libpq_url(engine.url), str(db_file)],
                                capture_output=True, text=True, check=False, timeout=6 * 3600)
        if result.returncode != 0:
            raise ConfigError(f"pg_restore failed: {result.stderr.strip()[-500:]}",
                              hint="Check the URL and that pg_restore's major version is the server's.")
    revision_now = platform.migrate()  # an older backup is brought up to this version's schema
    missing = sorted(_referenced(engine) - {info.digest for info in platform.objects.list()})
    if missing:
        raise IntegrityError(f"{len(missing)} object(s) the restored database refers to are missing, e.g. {missing[0]}",
                             hint="The backup is incomplete; run `medcycle store fsck` for the full list.",
                             missing=missing[:20])
    key_restored = False
    if keys_from is not None:
        key_file = platform.settings.resolved_deid_key_file
        candidate = keys_from.expanduser() / key_file.name if keys_from.is_dir() else keys_from.expanduser()
        if not candidate.exists():
            raise NotFound(f"no key file at {candidate}", hint="Give the folder or file `--keys-to` wrote.")
        if key_file.exists() and key_file.read_bytes() != candidate.read_bytes():
            raise Conflict("a different de-identification key already exists here",
                           hint="Move it away first if the backup's key is the right one.")
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(candidate, key_file)
        key_file.chmod(0o600)
        key_restored = True
    return RestoreReport(folder=str(src), revision_in_backup=manifest["revision"], revision_now=revision_now,
                         database=kind, objects_restored=restored, objects_present=present, bytes_restored=nbytes,
                         key_restored=key_restored, seconds=round(time.perf_counter() - started, 3))


def describe_url(url: str) -> str:
    """The database URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)
