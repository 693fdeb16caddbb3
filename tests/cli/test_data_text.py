"""`medcycle data` and `medcycle dataset` tables show text from files and users as text, never as Rich markup."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pydicom
import pytest

from medcycle.cli.errors import run
from medcycle.cli.main import app

CT = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    h = tmp_path / "home"
    monkeypatch.setenv("MEDCYCLE_HOME", str(h))
    monkeypatch.setenv("MEDCYCLE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "400")  # one table row a line
    return h


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(app, list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_brackets_in_catalog_values_paths_and_descriptions(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manufacturer 'ACME [/x]' made `data query` and `data summary` end in an internal error (Rich's
    MarkupError); a model 'Scanner [v2]' lost '[v2]'; a file name with '[bold]' lost it in the rejected list."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(CT)
    ds.Manufacturer = "ACME [/x]"
    ds.ManufacturerModelName = "Scanner [v2]"
    src = tmp_path / "in"
    src.mkdir()
    ds.save_as(src / "ct.dcm")
    (src / "[bold]notes.txt").write_text("not an image")
    assert cli(capsys, "init")[0] == 0
    code, out, err = cli(capsys, "data", "ingest", str(src), "--source", "s")
    assert code == 0, err
    assert "[bold]notes.txt" in out
    code, out, err = cli(capsys, "data", "query", "")
    assert code == 0 and "Internal error" not in err, err
    assert "ACME [/x]" in out
    code, out, err = cli(capsys, "data", "summary")
    assert code == 0 and "ACME [/x]" in out, err
    code, _, err = cli(capsys, "dataset", "create", "d", "--query", "", "-d", "scans [/x] of [v2]")
    assert code == 0, err
    code, out, err = cli(capsys, "dataset", "list")
    assert code == 0 and "scans [/x] of [v2]" in out, err
    code, _, err = cli(capsys, "dataset", "freeze", "d", "-m", "first [/x]")
    assert code == 0, err
    code, out, err = cli(capsys, "dataset", "log", "d")
    assert code == 0 and "first [/x]" in out, err


def test_brackets_in_labels_and_paths_printed_after_the_work_is_done(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A label '[/x]bad' was imported and then the confirmation line raised MarkupError: exit 70 for work that
    had been committed. The same for a pull into a folder named with '[/x]' and a relabel shown by diff."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(CT)
    src = tmp_path / "in"
    src.mkdir()
    ds.save_as(src / "ct.dcm")
    assert cli(capsys, "init")[0] == 0
    assert cli(capsys, "data", "ingest", str(src), "--source", "s")[0] == 0
    code, out, _ = cli(capsys, "data", "query", "", "--json")
    study = __import__("json").loads(out)["rows"][0]["study"]
    assert cli(capsys, "dataset", "create", "d", "--query", "")[0] == 0
    for i, label in enumerate(["[/x]bad", "[bold]good"]):
        csv_file = tmp_path / f"labels{i}.csv"
        csv_file.write_text(f"study,label\n{study},{label}\n")
        code, out, err = cli(capsys, "dataset", "labels", "import", "d", str(csv_file))
        assert code == 0 and label in out, err
        assert cli(capsys, "dataset", "freeze", "d")[0] == 0
    code, out, err = cli(capsys, "dataset", "diff", "d@v1", "d@v2")
    assert code == 0 and "[/x]bad → [bold]good" in out, err
    dest = tmp_path / "x[" / "y]" / "z"  # shown as '…/x[/y]/z'
    code, out, err = cli(capsys, "dataset", "pull", "d", "--to", str(dest))
    assert code == 0 and str(dest) in out.replace("\n", ""), err
