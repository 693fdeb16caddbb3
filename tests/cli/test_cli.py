"""CLI parsing, exit codes, --json output and error hints (the library itself is tested elsewhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medcycle.cli.errors import run
from medcycle.cli.main import app


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    """A fresh home whose metadata store is SQLite or PostgreSQL (each test runs on both)."""
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    h = tmp_path / "home"
    monkeypatch.setenv("MEDCYCLE_HOME", str(h))
    monkeypatch.setenv("MEDCYCLE_DATABASE_URL", db_url)
    return h


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(app, list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_init_then_users_tokens_audit(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "init", "--json")
    assert code == 0
    init = json.loads(out)
    assert init["admin_created"] is True and init["admin_token"].startswith("mct_")
    code, out, _ = cli(capsys, "init", "--json")
    assert json.loads(out)["admin_created"] is False
    assert cli(capsys, "user", "add", "dr-smith", "--role", "annotator")[0] == 0
    code, out, _ = cli(capsys, "user", "list", "--json")
    assert {u["name"]: u["role"] for u in json.loads(out)} == {"admin": "admin", "dr-smith": "annotator"}
    code, out, _ = cli(capsys, "token", "create", "--user", "dr-smith", "--json")
    token = json.loads(out)
    code, out, _ = cli(capsys, "token", "list", "--user", "dr-smith", "--json")
    assert [t["id"] for t in json.loads(out)] == [token["id"]]
    assert "token" not in json.loads(out)[0]
    assert cli(capsys, "token", "revoke", token["id"])[0] == 0
    code, out, _ = cli(capsys, "audit", "list", "--action", "token.", "--json")
    assert [e["action"] for e in json.loads(out)] == ["token.revoke", "token.create"]
    assert all(e["actor"].startswith("local:") for e in json.loads(out))


def test_errors_map_to_exit_codes_with_hints(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "init")
    code, _, err = cli(capsys, "user", "add", "x1", "--role", "wizard")
    assert code == 2 and "Error: 'wizard' is not a role" in err and "Hint:" in err
    code, _, err = cli(capsys, "user", "show", "ghost")
    assert code == 4 and "medcycle user list" in err
    cli(capsys, "user", "add", "dup")
    code, _, err = cli(capsys, "user", "add", "dup")
    assert code == 5
    code, out, err = cli(capsys, "store", "stat", "abc", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "bad_request"
    code, _, err = cli(capsys, "jobs", "show", "nope")
    assert code == 4 and "medcycle jobs list" in err
    code, _, err = cli(capsys, "audit", "list", "--since", "yesterday")
    assert code == 2 and "ISO" in err
    from medcycle.cli.stages import STAGES

    for stage in STAGES:  # stages not built yet say so (none left once every stage exists)
        code, _, err = cli(capsys, stage)
        assert code == 2 and "not available" in err
    code, _, err = cli(capsys, "--queue-url", "amqp://x", "jobs", "queues")
    assert code == 78 and "redis://" in err
    assert "Traceback" not in err


def test_store_commands(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "init")
    files = []
    for i in range(3):
        f = tmp_path / f"f{i}.bin"
        f.write_bytes(os.urandom(1000 + i))
        files.append(f)
    code, out, _ = cli(capsys, "store", "put", *map(str, files), "--json")
    assert code == 0
    digests = [r["digest"] for r in json.loads(out)]
    dest = tmp_path / "back.bin"
    assert cli(capsys, "store", "get", digests[0], "-o", str(dest))[0] == 0
    assert dest.read_bytes() == files[0].read_bytes()
    code, out, _ = cli(capsys, "store", "ls", "--json")
    assert sorted(r["digest"] for r in json.loads(out)) == sorted(digests)
    code, out, _ = cli(capsys, "store", "fsck", "--json")
    assert code == 0 and json.loads(out)["checked"] == 3
    obj = home / "objects" / "sha256" / digests[1][:2] / digests[1][2:4] / digests[1]
    obj.chmod(0o644)
    obj.write_bytes(b"tampered")
    code, out, _ = cli(capsys, "store", "fsck", "--json")
    assert code == 7 and json.loads(out)["corrupt"] == [digests[1]]
    code, _, err = cli(capsys, "store", "get", digests[1], "-o", str(tmp_path / "x"))
    assert code == 7 and digests[1] in err
    code, out, _ = cli(capsys, "store", "gc", "--grace-seconds", "0", "--dry-run", "--json")
    assert code == 0 and len(json.loads(out)["deleted"]) == 3  # nothing references them yet
    code, _, err = cli(capsys, "store", "put", str(tmp_path / "missing.bin"))
    assert code == 4


def test_jobs_commands(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medcycle.platform import Platform
    from medcycle.settings import load_settings

    cli(capsys, "init")
    with Platform(load_settings()) as p:
        job = p.jobs.enqueue("work", {"n": 1})
    code, out, _ = cli(capsys, "jobs", "queues", "--json")
    assert json.loads(out)[0]["counts"] == {"queued": 1}
    assert cli(capsys, "jobs", "cancel", job.id)[0] == 0
    code, out, _ = cli(capsys, "jobs", "list", "--state", "cancelled", "--json")
    assert [j["id"] for j in json.loads(out)] == [job.id]
    assert cli(capsys, "jobs", "requeue", job.id)[0] == 0
    code, _, err = cli(capsys, "jobs", "list", "--state", "weird")
    assert code == 2
    assert "weird" in err


def test_doctor_reports_backends(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "init")
    code, out, _ = cli(capsys, "doctor", "--json", "--no-gpu")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert {b["name"] for b in report["backends"]} == {"database", "objects", "jobs"}
    code, out, _ = cli(capsys, "--database-url", "postgresql://x@127.0.0.1:1/none", "doctor", "--json", "--no-gpu")
    assert code == 9 and json.loads(out)["ok"] is False


def test_no_traceback_without_verbose(home: Path) -> None:
    env = {**os.environ, "MEDCYCLE_HOME": str(home)}
    bad = subprocess.run(
        [sys.executable, "-m", "medcycle", "store", "stat", "zz"], capture_output=True, text=True, env=env, check=False
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "Hint:" in bad.stderr
    verbose = subprocess.run(
        [sys.executable, "-m", "medcycle", "--verbose", "store", "stat", "zz"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    cfg = home.parent / "bad.toml"
    cfg.write_text("port = 'high'\n")
    res = subprocess.run(
        [sys.executable, "-m", "medcycle", "--config", str(cfg), "doctor"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert res.returncode == 78 and "port" in res.stderr and "docs/configuration.md" in res.stderr


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    import typer.main

    group = typer.main.get_command(app)
    for name in group.list_commands(None):  # type: ignore[attr-defined, arg-type]
        code = run(app, [name, "--help"])
        out = capsys.readouterr().out
        assert code == 0 and "Usage" in out, name
