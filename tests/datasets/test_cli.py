"""``medcycle dataset …``: a round trip through the commands with --json, exit codes and error hints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer

from medcycle.cli import datasets as datasets_cli
from medcycle.cli import system
from medcycle.cli.errors import run
from medcycle.cli.main import root
from medcycle.datasets.items import get_dataset
from medcycle.platform import Platform
from medcycle.settings import load_settings
from tests.datasets.conftest import labels_csv, seed_home_catalog


def make_app() -> typer.Typer:
    """The root command with the dataset group, as ``medcycle.cli.main`` wires it."""
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    app.callback()(root)
    system.register(app)
    app.add_typer(datasets_cli.app, name="dataset")
    return app


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    h = tmp_path / "home"
    monkeypatch.setenv("MEDCYCLE_HOME", str(h))
    monkeypatch.setenv("MEDCYCLE_DATABASE_URL", db_url)
    return h


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(make_app(), list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dataset_round_trip(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "init")[0] == 0
    studies = seed_home_catalog(6, 2)
    code, out, err = cli(capsys, "dataset", "create", "cxr", "--query", "", "-d", "all of it", "--json")
    assert code == 0, err
    assert json.loads(out)["items"] == 12
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(labels_csv(studies))
    code, out, _ = cli(capsys, "dataset", "labels", "import", "cxr", str(csv_file), "--json")
    assert code == 0 and json.loads(out)["classes"] == ["normal", "pneumonia"]
    code, out, err = cli(capsys, "dataset", "freeze", "cxr", "--tag", "v1.0", "--split", "train=0.5,test=0.5",
                         "--stratify", "label", "--seed", "1", "--json")
    assert code == 0, err
    frozen = json.loads(out)
    assert frozen["created"] is True and frozen["leakage"]["ok"] is True
    version_id = frozen["version"]["id"]
    code, out, _ = cli(capsys, "dataset", "freeze", "cxr")  # human output, nothing changed
    assert code == 0 and "unchanged" in out
    code, out, _ = cli(capsys, "dataset", "remove", "cxr", "--uid", studies[0], "--json")
    assert json.loads(out)["changed"] == 2
    assert cli(capsys, "dataset", "freeze", "cxr", "-m", "drop one study")[0] == 0
    code, out, _ = cli(capsys, "dataset", "log", "cxr", "--json")
    assert [(v["seq"], v["items"]) for v in json.loads(out)] == [(2, 10), (1, 12)]
    code, out, _ = cli(capsys, "dataset", "show", "cxr@v1.0", "--json")
    assert json.loads(out)["id"] == version_id and json.loads(out)["tags"] == ["v1.0"]
    code, out, _ = cli(capsys, "dataset", "diff", "cxr@v1.0", "cxr@v2", "--json")
    assert json.loads(out)["summary"]["removed"] == 2
    code, out, _ = cli(capsys, "dataset", "diff", "cxr@v1.0", "cxr@v2")
    assert code == 0 and "-2 images" in out
    code, out, _ = cli(capsys, "dataset", "list", "--json")
    assert [(d["name"], d["versions"]) for d in json.loads(out)] == [("cxr", 2)]

    assert cli(capsys, "dataset", "card", "edit", "cxr", "--field", "licence=CC-BY-4.0")[0] == 0
    code, out, _ = cli(capsys, "dataset", "card", "cxr@v1.0")
    assert code == 0 and "# Dataset card: cxr v1" in out and "CC-BY-4.0" in out
    code, out, _ = cli(capsys, "dataset", "card", "cxr@v1.0", "--format", "json")
    assert json.loads(out)["version"]["id"] == version_id
    code, _, _ = cli(capsys, "dataset", "card", "cxr@v1.0", "--format", "html", "-o", str(tmp_path / "card.html"))
    assert code == 0 and (tmp_path / "card.html").read_text().startswith("<!doctype html>")

    code, out, err = cli(capsys, "dataset", "pull", "cxr@v1.0", "--to", str(tmp_path / "data"), "--json")
    assert code == 0, err
    assert json.loads(out)["items"] == 12 and (tmp_path / "data" / "manifest.csv").is_file()
    code, out, err = cli(capsys, "dataset", "pull", "cxr@v1.0", "--to", str(tmp_path / "test"), "--split", "test")
    assert code == 0 and "pulled" in out
    code, out, _ = cli(capsys, "dataset", "status", "cxr@v1.0", "--to", str(tmp_path / "data"), "--json")
    assert code == 0 and json.loads(out)["complete"] is True
    code, out, _ = cli(capsys, "dataset", "push", "cxr@v1.0", "--json")
    assert code == 0 and json.loads(out)["uploaded_objects"] == 0

    code, out, _ = cli(capsys, "dataset", "show", "cxr@v9", "--json")
    assert code == 4 and json.loads(out)["error"]["code"] == "not_found"
    code, _, err = cli(capsys, "dataset", "delete", "cxr")
    assert code == 5 and "Hint:" in err
    code, _, err = cli(capsys, "dataset", "freeze", "cxr", "--split", "train=0.9")
    assert code == 2 and "two distinct names" in err
    code, _, err = cli(capsys, "dataset", "freeze", "cxr", "--tag", "v1.0")
    assert code == 5 and "never move" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("study,label\nnot-a-study,x\n")
    code, _, err = cli(capsys, "dataset", "labels", "import", "cxr", str(bad))
    assert code == 2 and "line 2" in err
    assert "Traceback" not in err


def test_labels_import_of_a_latin1_file_is_a_usage_error(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CSV saved as Latin-1 (Excel's default on many machines) ended in an internal error (exit 70)."""
    assert cli(capsys, "init")[0] == 0
    studies = seed_home_catalog(2)
    assert cli(capsys, "dataset", "create", "cxr", "--query", "")[0] == 0
    csv_file = tmp_path / "labels.csv"
    csv_file.write_bytes(f"study,label\n{studies[0]},normal\n{studies[1]},d\xe9j\xe0 vu\n".encode("latin-1"))
    code, _, err = cli(capsys, "dataset", "labels", "import", "cxr", str(csv_file))
    assert code == 2, err
    assert "labels.csv is not UTF-8 text (line 3" in err and "Save the file as UTF-8" in err
    assert "Internal error" not in err and "Traceback" not in err


def test_freeze_with_zero_folds_or_an_empty_split_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--folds 0` and `--split ''` were read as 'not given': the version was frozen without a split (or the
    previous one's) and the option silently ignored."""
    assert cli(capsys, "init")[0] == 0
    seed_home_catalog(4)
    assert cli(capsys, "dataset", "create", "cxr", "--query", "")[0] == 0
    code, _, err = cli(capsys, "dataset", "freeze", "cxr", "--folds", "0")
    assert code == 2 and "0 folds is not possible" in err
    code, _, err = cli(capsys, "dataset", "freeze", "cxr", "--split", "")
    assert code == 2 and "Hint:" in err
    code, out, _ = cli(capsys, "dataset", "log", "cxr", "--json")
    assert code == 0 and json.loads(out) == []


def test_pull_to_an_empty_path_is_refused(home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`--to ""` (an unset variable in a script) pulled the whole version into the current folder."""
    assert cli(capsys, "init")[0] == 0
    seed_home_catalog(2)
    assert cli(capsys, "dataset", "create", "cxr", "--query", "")[0] == 0
    assert cli(capsys, "dataset", "freeze", "cxr")[0] == 0
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, _, err = cli(capsys, "dataset", "pull", "cxr", "--to", "")
    assert code == 2 and "--to" in err and "Hint:" in err
    assert list(work.iterdir()) == []


def test_card_output_to_a_place_that_cannot_be_written(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`card -o` into a missing or unwritable folder ended in an internal error (exit 70)."""
    assert cli(capsys, "init")[0] == 0
    seed_home_catalog(2)
    assert cli(capsys, "dataset", "create", "cxr", "--query", "")[0] == 0
    assert cli(capsys, "dataset", "freeze", "cxr")[0] == 0
    code, _, err = cli(capsys, "dataset", "card", "cxr", "-o", str(tmp_path / "no" / "such" / "card.md"))
    assert code == 2 and "cannot write" in err and "Hint:" in err
    good = tmp_path / "card.html"
    code, _, _ = cli(capsys, "dataset", "card", "cxr", "--format", "html", "-o", str(good))
    assert code == 0 and good.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_card_edit_refuses_too_long_or_nul_text(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The 20,000-character limit of a human field held only in the web form; the CLI stored any length."""
    assert cli(capsys, "init")[0] == 0
    assert cli(capsys, "dataset", "create", "cxr", "--query", "")[0] == 0
    code, _, err = cli(capsys, "dataset", "card", "edit", "cxr", "--field", "motivation=" + "m" * 20_001)
    assert code == 2 and "motivation: longer than 20,000 characters" in err and "Hint: Nothing was saved" in err
    code, _, err = cli(capsys, "dataset", "card", "edit", "cxr", "--field", "licence=CC0\x00")
    assert code == 2 and "U+0000 (NUL)" in err and "Hint:" in err
    with Platform(load_settings()) as p, p.session() as s:
        assert get_dataset(s, "cxr").card_fields == {}
