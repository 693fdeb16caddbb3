"""``medcycle run …``: parsing, --json output, exit codes (mounted as the lead will mount it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer

from medcycle.cli import runs as runs_cli
from medcycle.cli.context import CliState
from medcycle.cli.errors import run as run_cli
from medcycle.experiments.sdk import start_run
from medcycle.platform import Platform
from medcycle.testing.platform import make_settings

root = typer.Typer()
root.add_typer(runs_cli.app, name="run")


@root.callback()
def _root(ctx: typer.Context) -> None:
    """Root for tests (the real one lives in medcycle.cli.main): one CliState, closed at the end."""
    ctx.obj = CliState()
    ctx.call_on_close(ctx.obj.close)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    h = tmp_path / "home"
    monkeypatch.setenv("MEDCYCLE_HOME", str(h))
    monkeypatch.setenv("MEDCYCLE_DATABASE_URL", db_url)
    monkeypatch.setenv("MEDCYCLE_ENVIRONMENT", "test")
    monkeypatch.setenv("MEDCYCLE_SECRET_KEY", "x" * 40)
    return h


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_cli(root, list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_show_compare_log_metrics(home: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    platform = Platform(make_settings(home, database_url=db_url))
    platform.init()
    ids = []
    for i, lr in enumerate((0.1, 0.01)):
        with start_run("cli", name=f"r{i}", platform=platform, capture=False, resources=False,
                       params={"lr": lr}, tags={"team": "chest"}) as r:
            print(f"hello from r{i}")
            r.log_metric("val_dice", 0.5 + lr, step=3)
            ids.append(r.id)
    platform.close()
    capsys.readouterr()
    code, out, _ = cli(capsys, "run", "list", "--filter", "params.lr > 0.05", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)["runs"]] == ["r0"]
    code, out, _ = cli(capsys, "run", "list", "--columns", "params.lr,metrics.val_dice")
    assert code == 0 and "r0" in out and "0.6" in out
    code, out, _ = cli(capsys, "run", "show", "r1", "--json")
    assert code == 0 and json.loads(out)["metric_summaries"]["val_dice"]["last"] == pytest.approx(0.51)
    code, out, _ = cli(capsys, "run", "show", ids[0][:6])
    assert code == 0 and "not reproducible" in out
    code, out, _ = cli(capsys, "run", "compare", "r0", "r1", "--json")
    assert code == 0 and json.loads(out)["differing_params"] == ["lr"]
    code, out, _ = cli(capsys, "run", "compare", "r0", "r1")
    assert code == 0 and "lr" in out
    code, out, _ = cli(capsys, "run", "log", "r1")
    assert code == 0 and out == "hello from r1\n"
    code, out, _ = cli(capsys, "run", "metrics", "r0", "--json")
    assert code == 0 and json.loads(out)["val_dice"]["steps"] == [3]
    code, out, _ = cli(capsys, "run", "diff", "r0")
    assert code == 0 and out == ""
    code, out, err = cli(capsys, "run", "list", "--filter", "params.lr = 1")
    assert code == 2 and "Use ==" in err
    code, _, err = cli(capsys, "run", "show", "nothing-like-it")
    assert code == 4 and "medcycle run list" in err
    code, out, _ = cli(capsys, "run", "sync", "--json")
    assert code == 0 and json.loads(out) == []
