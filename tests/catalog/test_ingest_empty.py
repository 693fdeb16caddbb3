"""Nothing to ingest is refused: an ingest of empty folders created the source and reported zeros."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from medcycle.auth.tables import AuditEventRow
from medcycle.catalog.ingest import ingest
from medcycle.catalog.tables import IngestRunRow, SourceRow
from medcycle.errors import NotFound, UsageError
from medcycle.platform import Platform
from medcycle.testing.dicom import write_ct_series


def _state(platform: Platform) -> tuple[list[str], int, int, list[str]]:
    """What an ingest leaves behind: sources, ingest runs, audit events and the files of the home."""
    with platform.session() as s:
        sources = list(s.scalars(select(SourceRow.name).order_by(SourceRow.name)))
        runs = s.scalar(select(func.count()).select_from(IngestRunRow)) or 0
        events = s.scalar(select(func.count()).select_from(AuditEventRow)) or 0
    home = platform.settings.home
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*")
                   if p.is_file() and not p.name.startswith("medcycle.db"))  # SQLite's files change on any read
    return sources, runs, events, files


def _empty(tmp: Path) -> list[Path]:
    (tmp / "empty").mkdir()
    return [tmp / "empty"]


def _nested(tmp: Path) -> list[Path]:
    (tmp / "tree" / "a" / "b").mkdir(parents=True)
    (tmp / "tree" / "c").mkdir()
    return [tmp / "tree"]


def _hidden(tmp: Path) -> list[Path]:
    root = tmp / "hidden"
    (root / "sub" / ".git").mkdir(parents=True)
    for name in (".DS_Store", "Thumbs.db", "._scan.dcm", ".gitkeep", "sub/.hidden.dcm", "sub/.git/config"):
        (root / name).write_bytes(b"not an image")
    return [root]


def _zip_and_folders(tmp: Path) -> list[Path]:
    with zipfile.ZipFile(tmp / "empty.zip", "w") as zf:
        zf.writestr("folder/", b"")
        zf.writestr("__MACOSX/._x", b"junk")
    return [tmp / "empty.zip", *_empty(tmp), *_nested(tmp)]


@pytest.mark.parametrize("make", [_empty, _nested, _hidden, _zip_and_folders])
def test_paths_without_files_are_refused_and_nothing_is_created(
    platform: Platform, tmp_path: Path, make: Callable[[Path], list[Path]]
) -> None:
    write_ct_series(tmp_path / "first", slices=1)
    ingest(platform, [tmp_path / "first"], source="site-a")  # the home as a real one is: a source, a run, a key
    before = _state(platform)
    paths = make(tmp_path)
    for source in ("new-site", "site-a"):
        with pytest.raises(UsageError) as err:
            ingest(platform, paths, source=source, jobs=1)
        message = err.value.message
        assert message.startswith("nothing to ingest in ") and all(str(p) in message for p in paths)
        assert "nothing was created" in message
        assert "DICOM" in (err.value.hint or "") and "NIfTI" in (err.value.hint or "")
        if make is _hidden:
            # .gitkeep, sub/.hidden.dcm and sub/.git/config; the walk ignores the rest
            assert "only 3 hidden file(s)" in message
    assert _state(platform) == before  # no source, no run, no audit event, no file


def test_a_missing_key_is_not_made_either(platform: Platform, tmp_path: Path) -> None:
    key = Path(platform.settings.resolved_deid_key_file)
    key.unlink(missing_ok=True)
    with pytest.raises(UsageError):
        ingest(platform, _empty(tmp_path), source="s1")
    assert not key.exists() and _state(platform)[:2] == ([], 0)


def test_a_missing_path_creates_no_source_or_run(platform: Platform, tmp_path: Path) -> None:
    """NotFound came from the first file read, after the source and a run left 'running' were committed."""
    before = _state(platform)
    with pytest.raises(NotFound, match="no such file or folder"):
        ingest(platform, [tmp_path / "absent"], source="s1")
    assert _state(platform) == before and before[:2] == ([], 0)


def test_files_that_are_all_rejected_are_still_an_ingest(platform: Platform, tmp_path: Path) -> None:
    """Not empty: a folder of files that are then rejected runs and reports them, as before."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    (tmp_path / "notes" / ".gitkeep").write_text("")  # a hidden file next to a real one is read as before
    summary = ingest(platform, [tmp_path / "notes", *_empty(tmp_path)], source="s1")
    assert summary.ingested == 0
    assert sorted(Path(r["path"]).name for r in summary.rejected) == [".gitkeep", "readme.txt"]
    assert _state(platform)[:2] == (["s1"], 1)
    (tmp_path / ".scan.dcm").write_bytes(b"named on the command line")  # hidden, but asked for by name
    summary = ingest(platform, [tmp_path / ".scan.dcm"], source="s1")
    assert [Path(r["path"]).name for r in summary.rejected] == [".scan.dcm"]


def test_an_empty_folder_next_to_data_is_fine(platform: Platform, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "ct", slices=2)
    (tmp_path / "ct" / ".DS_Store").write_bytes(b"junk")
    summary = ingest(platform, [*_empty(tmp_path), tmp_path / "ct"], source="s1", jobs=2)
    assert summary.ingested == 2 and summary.rejected == []


def test_the_cli_exits_2_and_creates_nothing(
    tmp_path: Path, cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medcycle.cli.errors import run
    from medcycle.cli.main import app

    assert run(app, ["init"]) == 0
    capsys.readouterr()
    empty = _nested(tmp_path)[0]
    assert run(app, ["data", "ingest", str(empty), "--source", "clinic-a"]) == 2
    err = capsys.readouterr().err
    assert f"nothing to ingest in {empty}" in err and "Hint:" in err and "zip archives" in err
    assert run(app, ["data", "ingest", str(empty), "--source", "clinic-a", "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"]["code"] == "bad_request" and doc["error"]["details"]["paths"] == [str(empty)]
    assert run(app, ["data", "sources", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
