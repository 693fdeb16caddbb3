"""`medcycle backup`: a consistent snapshot of database + objects, incremental, restored into an empty system."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from medcycle.catalog.ingest import ingest
from medcycle.catalog.tables import PatientRow
from medcycle.cli.errors import run
from medcycle.cli.main import app
from medcycle.errors import Conflict, IntegrityError, UsageError
from medcycle.objects.maintenance import fsck
from medcycle.objects.refs import referenced_digests
from medcycle.platform import Platform
from medcycle.store.backup import create_backup, restore_backup
from medcycle.testing.dicom import FakePatient, write_ct_series
from medcycle.testing.platform import make_settings


def _counts(p: Platform) -> tuple[int, set[str], set[str]]:
    with p.session(write=False) as s:
        patients = s.scalar(select(func.count()).select_from(PatientRow)) or 0
        pseudonyms = set(s.scalars(select(PatientRow.id)))
        return patients, pseudonyms, referenced_digests(s)


@pytest.fixture
def target_url(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind as ``db_url`` to restore into."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url_for(name)
    finally:
        server.drop_database(name)


def test_backup_then_restore_into_an_empty_system(platform: Platform, tmp_path: Path, target_url: str) -> None:
    scans = tmp_path / "scans"
    write_ct_series(scans / "a", FakePatient(patient_id="MRN-1", name="Kim^A"), slices=4, size=32)
    write_ct_series(scans / "b", FakePatient(patient_id="MRN-2", name="Lee^B"), slices=3, size=32)
    assert ingest(platform, [scans], source="clinic-a").ingested == 7
    patients, pseudonyms, refs = _counts(platform)
    assert patients == 2 and len(refs) >= 7

    backup, keys = tmp_path / "backup", tmp_path / "vault"
    first = create_backup(platform, backup, keys_to=keys)
    manifest = json.loads((backup / "backup.json").read_text())
    assert manifest["objects"]["referenced"] == len(refs) and first.objects_copied == first.objects_total >= 7
    assert (keys / "deid.key").stat().st_mode & 0o777 == 0o600
    assert not any(p.name == "deid.key" for p in backup.rglob("*")), "the key must never sit in the backup"
    again = create_backup(platform, backup)  # incremental: nothing new to copy, and a warning about the key
    assert again.objects_copied == 0 and any("key" in w for w in again.warnings)

    restored = Platform(make_settings(tmp_path / "home2", database_url=target_url))
    try:
        restored.init()  # a fresh install: an admin, no data — what a restore starts from
        report = restore_backup(restored, backup, keys_from=keys)
        assert report.objects_restored == first.objects_total and report.key_restored
        r_patients, r_pseudonyms, r_refs = _counts(restored)
        assert (r_patients, r_pseudonyms, r_refs) == (patients, pseudonyms, refs)
        with restored.session(write=False) as s:
            assert fsck(restored.objects, s).ok
        # the key came back: a later study of the same patient re-links to the same pseudonym
        write_ct_series(tmp_path / "later", FakePatient(patient_id="MRN-1", name="Kim^A"), slices=2, size=32)
        assert ingest(restored, [tmp_path / "later"], source="clinic-a").ingested == 2
        assert _counts(restored)[:2] == (2, pseudonyms)
        with pytest.raises(Conflict, match="already holds data"):
            restore_backup(restored, backup)
    finally:
        restored.close()


def test_refusals_name_the_problem(sqlite_platform: Platform, tmp_path: Path) -> None:
    p = sqlite_platform
    write_ct_series(tmp_path / "scans", FakePatient(), slices=2, size=32)
    ingest(p, [tmp_path / "scans"], source="s")
    with pytest.raises(UsageError, match="inside the home"):
        create_backup(p, p.settings.home / "backups")
    backup = tmp_path / "backup"
    with pytest.raises(UsageError, match="inside the backup folder"):
        create_backup(p, backup, keys_to=backup / "keys")
    create_backup(p, backup)
    # an altered database file is caught before anything is written
    db = backup / "database.sqlite"
    db.write_bytes(db.read_bytes() + b"\0")
    fresh = Platform(make_settings(tmp_path / "fresh"))
    try:
        with pytest.raises(IntegrityError, match=r"database\.sqlite"):
            restore_backup(fresh, backup)
    finally:
        fresh.close()
    # an object the database refers to but the store lost: the backup refuses and names it
    with p.session(write=False) as s:
        lost = sorted(referenced_digests(s))[0]
    os.chmod(p.objects.path_for(lost), 0o600)  # type: ignore[attr-defined]
    p.objects.path_for(lost).unlink()  # type: ignore[attr-defined]
    with pytest.raises(IntegrityError, match=lost):
        create_backup(p, tmp_path / "backup2")
    assert not (tmp_path / "backup2" / "backup.json").exists(), "an unfinished backup has no manifest"


def test_cli_backup_and_restore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(tmp_path / "home"))
    assert run(app, ["init"]) == 0
    write_ct_series(tmp_path / "scans", FakePatient(), slices=3, size=32)
    assert run(app, ["data", "ingest", str(tmp_path / "scans"), "--source", "s"]) == 0
    capsys.readouterr()
    assert run(app, ["backup", "create", str(tmp_path / "bk"), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["objects_copied"] >= 3 and made["warnings"]
    monkeypatch.setenv("MEDCYCLE_HOME", str(tmp_path / "home2"))
    assert run(app, ["backup", "restore", str(tmp_path / "nothing-here")]) == 4
    assert "holds no finished backup" in capsys.readouterr().err
    assert run(app, ["backup", "restore", str(tmp_path / "bk"), "--json"]) == 0
    restored = json.loads(capsys.readouterr().out)
    assert restored["objects_restored"] == made["objects_total"]
    assert run(app, ["store", "fsck"]) == 0
    capsys.readouterr()
    # each side audits its own act (the backup's event is written after its snapshot, so only in the source)
    assert run(app, ["audit", "list", "--action", "system.", "--json"]) == 0
    assert [e["action"] for e in json.loads(capsys.readouterr().out)] == ["system.restore"]
    monkeypatch.setenv("MEDCYCLE_HOME", str(tmp_path / "home"))
    assert run(app, ["audit", "list", "--action", "system.", "--json"]) == 0
    assert [e["action"] for e in json.loads(capsys.readouterr().out)] == ["system.backup"]
