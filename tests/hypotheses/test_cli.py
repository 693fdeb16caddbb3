"""``medcycle hypothesis …``: a round trip through every command with --json, exit codes and hints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import typer

from medcycle.auth import audit
from medcycle.cli import hypotheses as hypotheses_cli
from medcycle.cli import system
from medcycle.cli.errors import run
from medcycle.cli.main import root
from medcycle.platform import Platform
from medcycle.settings import load_settings


def make_app() -> typer.Typer:
    """The root command with the hypothesis group, as ``medcycle.cli.main`` will wire it."""
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    app.callback()(root)
    system.register(app)
    app.add_typer(hypotheses_cli.app, name="hypothesis")
    return app


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    h = tmp_path / "home"
    monkeypatch.setenv("MEDCYCLE_HOME", str(h))
    monkeypatch.setenv("MEDCYCLE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "200")  # Rich tables on one line each
    return h


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(make_app(), ["hypothesis", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def ok_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_hypothesis_round_trip(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(make_app(), ["init"]) == 0
    capsys.readouterr()
    first = ok_json(capsys, "add", "Pneumothorax triage", "-p", "chest-xr", "-d", "ER radiographs")
    assert (first["ref"], first["status"], first["questions"]) == ("H-1", "proposed", 10)
    assert first["owner"].startswith("local:")
    ok_json(capsys, "add", "Bone age", "-p", "msk", "--owner", "bob")
    assert ok_json(capsys, "score", "H-1", "ice", "--impact", "8", "--confidence", "5", "--ease", "6")["ice"] == 240
    rice = ok_json(capsys, "score", "H-1", "rice", "--reach", "400", "--impact", "2", "--confidence", "80",
                   "--effort", "3")
    assert rice["scores"]["rice"]["score"] == pytest.approx(213.333, rel=1e-4)
    ok_json(capsys, "score", "2", "rice", "--reach", "5000", "--impact", "1", "--confidence", "50", "--effort", "2")
    got = ok_json(capsys, "answer", "H-1", "data_available", "20k studies", "-c", "high", "-n", "PACS")
    assert got["answered"] == 1 and got["answers"][3]["answer"] == "20k studies"
    for voter, value in (("ann", "up"), ("ben", "up"), ("ben", "down")):
        ok_json(capsys, "vote", "H-2", value, "--voter", voter, "-m", f"{voter} says {value}")
    got = ok_json(capsys, "vote", "H-1", "up")
    assert got["votes"]["score"] == 1
    got = ok_json(capsys, "decide", "H-1", "go", "--by", "cmo", "-m", "top priority")
    assert got["decision"]["decision"] == "go" and got["decision"]["by"] == "cmo"
    ok_json(capsys, "explore", "H-1", "-m", "baseline first")
    got = ok_json(capsys, "link", "H-1", "--run", "run-42", "-m", "baseline")
    assert got["links"][0]["target"] == "run-42"
    got = ok_json(capsys, "edit", "H-1", "--title", "Pneumothorax triage in the ER")
    assert got["title"] == "Pneumothorax triage in the ER"

    by_ice = ok_json(capsys, "list")
    assert [(h["ref"], h["rank"]) for h in by_ice] == [("H-1", 1), ("H-2", 2)]
    assert [h["ref"] for h in ok_json(capsys, "list", "--sort", "rice")] == ["H-2", "H-1"]
    assert [h["ref"] for h in ok_json(capsys, "list", "--sort", "votes")] == ["H-1", "H-2"]
    assert [h["ref"] for h in ok_json(capsys, "list", "--status", "proposed,killed")] == ["H-2"]
    code, out, _ = cli(capsys, "list")
    assert code == 0 and "ICE" in out and "RICE" in out and "HiPPO" in out and "go (cmo)" in out

    ok_json(capsys, "close", "H-2", "killed", "--reason", "no paying customer")
    code, out, err = cli(capsys, "vote", "H-2", "up")
    assert code == 5 and "votes are closed" in err and "reopen" in err
    got = ok_json(capsys, "reopen", "H-2", "--reason", "a vendor asked for it")
    assert got["status"] == "exploring"
    shown = ok_json(capsys, "show", "H-2")
    assert [h["to"] for h in shown["history"]] == ["proposed", "killed", "exploring"]
    code, out, _ = cli(capsys, "show", "H-1")
    assert code == 0 and "Pneumothorax triage in the ER" in out and "20k studies" in out and "run-42" in out
    code, out, _ = cli(capsys, "questions")
    assert code == 0 and "rollout_quality" in out
    assert len(ok_json(capsys, "questions")) == 10
    ok_json(capsys, "link", "H-1", "--run", "run-42", "--remove")
    ok_json(capsys, "answer", "H-1", "data_available", "--clear")
    ok_json(capsys, "vote", "H-1", "--retract")

    with Platform(load_settings()) as p, p.session() as s:
        acts = {e.action for e in audit.query(s, action="hypothesis.", limit=1000)}
        assert {e.via for e in audit.query(s, action="hypothesis.", limit=1000)} == {"cli"}
    assert acts == {"hypothesis.create", "hypothesis.score", "hypothesis.answer", "hypothesis.vote",
                    "hypothesis.decide", "hypothesis.explore", "hypothesis.link", "hypothesis.edit",
                    "hypothesis.close", "hypothesis.reopen", "hypothesis.unlink", "hypothesis.answer.clear",
                    "hypothesis.vote.retract"}


ERRORS: list[tuple[tuple[str, ...], int, str]] = [
    (("show", "H-9"), 4, "does not exist"),
    (("show", "nine"), 2, "not a hypothesis reference"),
    (("score", "H-1", "ice", "--impact", "11", "--confidence", "5", "--ease", "6"), 2, "1 to 10"),
    (("score", "H-1", "ice", "--impact", "1", "--confidence", "5", "--ease", "6", "--reach", "3"), 2, "belong to RICE"),
    (("score", "H-1", "rice", "--reach", "1", "--impact", "1.5", "--confidence", "5", "--effort", "1"), 2,
     "not on the scale"),
    (("score", "H-1", "wsjf"), 2, "not a scoring method"),
    (("close", "H-1", "validated", "--reason", "great"), 5, "Explore it before validating"),
    (("close", "H-1", "killed"), 2, "reason is required"),
    (("vote", "H-1"), 2, "say how you vote"),
    (("link", "H-1"), 2, "give one of --run or --dataset"),
    (("decide", "H-1", "maybe"), 2, "Choose one of: go, no-go, defer"),
    (("list", "--sort", "age"), 2, "not a sort key"),
]


def test_errors_exit_with_codes_hints_and_one_json_shape(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "add", "An idea", "-p", "x")[0] == 0
    for args, code, fragment in ERRORS:
        got, _, err = cli(capsys, *args)
        assert (got, fragment in err) == (code, True), (args, err)
        got, out, _ = cli(capsys, *args, "--json")
        assert got == code and set(json.loads(out)["error"]) == {"code", "message", "hint", "details"}, args
    assert cli(capsys, "add", "--json")[0] == 2  # Typer's own usage error: missing title and project
