"""``medcycle labels …``: schemas, readers, tasks, queues, submissions (classes, boxes, masks), adjudication,
label sets and their dataset labels — a round trip with --json, exit codes and hints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer

from medcycle.cli import labels as labels_cli
from medcycle.cli import system
from medcycle.cli.errors import run
from medcycle.cli.main import root
from medcycle.datasets.items import create_dataset
from medcycle.datasets.versions import freeze
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.testing.catalog import make_catalog
from tests.labels.task_helpers import BOX_SCHEMA, CLASS_SCHEMA


def make_app() -> typer.Typer:
    """The root command with the labels group, as ``medcycle.cli.main`` will wire it."""
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    app.callback()(root)
    system.register(app)
    app.add_typer(labels_cli.app, name="labels")
    return app


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    h = tmp_path / "home"
    monkeypatch.setenv("MEDCYCLE_HOME", str(h))
    monkeypatch.setenv("MEDCYCLE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "200")
    return h


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(make_app(), ["labels", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def ok_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def catalog_and_dataset() -> list[str]:
    """Two patients x one study x one series x three instances, and dataset ``cxr`` frozen as ``cxr@v1``."""
    with Platform(load_settings()) as p:
        with p.session() as s:
            make_catalog(s, sources=1, patients=2, studies_per_patient=1, series_per_study=1, instances_per_series=3,
                         seed=5)
        with p.session() as s:
            create_dataset(s, "cxr", query="")
            freeze(s, p.objects, "cxr", tag="v1")
        with p.session() as s:
            from medcycle.datasets.versions import item_states, resolve

            return sorted(item_states(s, resolve(s, "cxr@v1").id))


def test_labels_round_trip(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(make_app(), ["init"]) == 0
    capsys.readouterr()
    uids = catalog_and_dataset()
    (tmp_path / "chest.yaml").write_text(CLASS_SCHEMA)
    (tmp_path / "findings.yaml").write_text(BOX_SCHEMA.replace("kinds: [box]", "kinds: [box, mask]"))
    (tmp_path / "bad.yaml").write_text("name: bad\nclasses:\n  - name: a\n    kinds: [circle]\n")

    got = ok_json(capsys, "schema", "add", str(tmp_path / "chest.yaml"))
    assert (got["ref"], got["created"], got["origin"]) == ("chest@1", True, "chest.yaml")
    assert ok_json(capsys, "schema", "add", str(tmp_path / "chest.yaml"))["created"] is False
    assert ok_json(capsys, "schema", "add", str(tmp_path / "findings.yaml"))["ref"] == "findings@1"
    code, _, err = cli(capsys, "schema", "add", str(tmp_path / "bad.yaml"))
    assert code == 2 and "bad.yaml is not a valid label schema: classes[0].kinds: 'circle'" in err and "Hint:" in err
    code, _, err = cli(capsys, "schema", "add", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in err
    assert [s["ref"] for s in ok_json(capsys, "schema", "list")] == ["chest@1", "findings@1"]
    assert ok_json(capsys, "schema", "show", "findings")["classes"][0] == {"name": "nodule", "kinds": ["box", "mask"]}
    code, out, _ = cli(capsys, "schema", "show", "chest@1")
    assert code == 0 and "pneumonia" in out

    for name in ("ann", "bob"):
        assert ok_json(capsys, "reader", "set", name, "--qualified")["qualified"] is True
    got = ok_json(capsys, "reader", "set", "sue", "--senior", "--certification", "chest-2026")
    assert (got["senior"], got["qualified"], got["certification"]) == (True, False, "chest-2026")
    assert [r["name"] for r in ok_json(capsys, "reader", "list")] == ["ann", "bob", "sue"]
    code, _, err = cli(capsys, "reader", "set", "Not A Name")
    assert code == 2 and "valid reader name" in err

    # a class task from the dataset version, two readers per item, adjudication below 0.9
    t1 = ok_json(capsys, "task", "create", "--dataset", "cxr@v1", "--schema", "chest@1", "--readers-per-item", "2",
                 "--due", "2031-06-30", "--adjudication-threshold", "0.9", "--name", "cxr round 1")
    assert (t1["ref"], t1["items"], t1["origin"], t1["readers"]) == ("T-1", 6, "dataset cxr@v1", ["ann", "bob"])
    assert t1["due_at"] == "2031-06-30T23:59:59+00:00" and t1["origin_digest"]
    # a box/mask task from a catalog query, one reader per item
    t2 = ok_json(capsys, "task", "create", "--query", 'modality != "none"', "--schema", "findings",
                 "--readers", "ann,bob,sue", "--unblinded", "--seed", "4")
    assert t2["warnings"] == ["reader sue is not qualified and was left out of the assignment"]
    assert sorted(r["assigned"] for r in t2["reader_progress"]) == [3, 3] and t2["blinded"] is False
    code, _, err = cli(capsys, "task", "create", "--schema", "chest", "--readers-per-item", "2")
    assert code == 2 and "--dataset NAME@TAG or --query EXPR" in err
    code, _, err = cli(capsys, "task", "create", "--dataset", "cxr@nope", "--schema", "chest")
    assert code == 4 and "no version 'nope'" in err
    assert [t["ref"] for t in ok_json(capsys, "task", "list")] == ["T-2", "T-1"]

    queue = ok_json(capsys, "queue", "--reader", "ann", "--task", "T-1")
    assert len(queue) == 6 and {e["item"] for e in queue} == set(uids)
    assert queue[0]["due_at"] == "2031-06-30T23:59:59+00:00"
    for i, uid in enumerate(uids):
        a = ok_json(capsys, "submit", "T-1", uid, "--reader", "ann", "--label", "normal", "--seconds", "10")
        assert a["item_state"] == "open"
        b = ok_json(capsys, "submit", "T-1", uid, "--reader", "bob", "--label", "pneumonia" if i == 0 else "normal")
        assert b["item_state"] == ("adjudication" if i == 0 else "complete")
    code, _, err = cli(capsys, "submit", "T-1", uids[1], "--reader", "ann", "--label", "normal")
    assert code == 5 and "already submitted" in err
    code, _, err = cli(capsys, "submit", "T-1", uids[1], "--reader", "ann")
    assert code == 2 and "--nothing" in err
    code, _, err = cli(capsys, "submit", "T-1", "no-such-item", "--reader", "ann", "--label", "normal")
    assert code == 4 and "Hint:" in err
    shown = ok_json(capsys, "task", "show", "T-1")
    assert shown["item_states"] == {"open": 0, "complete": 5, "adjudication": 1, "resolved": 0}
    assert {r["reader"]: r["seconds"] for r in shown["reader_progress"]} == {"ann": 60.0, "bob": 0.0}
    code, out, _ = cli(capsys, "task", "show", "T-1")
    assert code == 0 and "5/6 items done" in out and "adjudication below 0.9" in out

    pending = ok_json(capsys, "adjudications")
    assert [(a["task"], a["item"], a["agreement"]) for a in pending] == [("T-1", uids[0], 0.0)]
    code, _, err = cli(capsys, "adjudicate", "T-1", uids[0], "--senior", "ann", "--choose", "bob")
    assert code == 6 and "not a senior reader" in err
    got = ok_json(capsys, "adjudicate", "T-1", uids[0], "--senior", "sue", "--label", "effusion", "-m", "both wrong")
    assert (got["decision"], got["resolved_by"], got["note"]) == ("new", "sue", "both wrong")
    assert ok_json(capsys, "adjudications") == []

    # boxes and masks come from a file; masks as .npy next to it
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1
    np.save(tmp_path / "nodule.npy", mask)
    (tmp_path / "reading.json").write_text(json.dumps({"seconds": 75, "tool": "cvat 2.1", "annotations": [
        {"label": "nodule", "kind": "box", "box": [2, 2, 6, 6]},
        {"label": "nodule", "kind": "mask", "mask_file": "nodule.npy", "spacing": [0.7, 0.7]}]}))
    (tmp_path / "broken.json").write_text(json.dumps([{"label": "nodule", "kind": "box", "box": [2, 2]}]))
    t2_ann = [e["item"] for e in ok_json(capsys, "queue", "--reader", "ann", "--task", "T-2")]
    t2_bob = [e["item"] for e in ok_json(capsys, "queue", "--reader", "bob", "--task", "T-2")]
    got = ok_json(capsys, "submit", "T-2", t2_ann[0], "--reader", "ann", "--file", str(tmp_path / "reading.json"))
    assert [(a["kind"], a["seconds"], a["tool"]) for a in got["annotations"]] == [("box", 75, "cvat 2.1"),
                                                                                  ("mask", 75, "cvat 2.1")]
    assert got["annotations"][1]["mask_digest"] and got["item_state"] == "complete"
    code, _, err = cli(capsys, "submit", "T-2", t2_ann[1], "--reader", "ann", "--file", str(tmp_path / "broken.json"))
    assert code == 2 and "broken.json: annotations[0].box" in err
    assert ok_json(capsys, "submit", "T-2", t2_bob[0], "--reader", "bob", "--nothing")["annotations"] == []
    listed = ok_json(capsys, "annotations", "T-2", t2_ann[0])
    assert [a["kind"] for a in listed] == ["box", "mask"]
    code, out, _ = cli(capsys, "annotations", "T-2", t2_ann[0])
    assert code == 0 and "mask " in out

    # label sets: the task's, then its dataset labels as the CSV `dataset labels import` reads
    code, _, err = cli(capsys, "set", "create", "--task", "T-2")
    assert code == 5 and "--partial" in err
    s1 = ok_json(capsys, "set", "create", "--task", "T-1")
    assert (s1["items"], s1["annotations"], s1["schema"], s1["created"]) == (6, 6, "chest@1", True)
    assert ok_json(capsys, "set", "create", "--task", "T-1")["created"] is False
    s2 = ok_json(capsys, "set", "create", "--task", "T-2", "--partial")
    assert (s2["items"], s2["annotations"]) == (2, 2)
    assert [s["id"] for s in ok_json(capsys, "set", "list")] and ok_json(capsys, "set", "show", s1["id"][:8])[
        "id"] == s1["id"]
    code, out, _ = cli(capsys, "set", "export", s1["id"][:8], "--csv", "-")
    assert code == 0 and out.splitlines()[0] == "instance,label"
    assert sorted(out.splitlines()[1:]) == sorted([f"{uids[0]},effusion", *(f"{u},normal" for u in uids[1:])])
    ok_json(capsys, "set", "export", s1["id"], "--csv", str(tmp_path / "labels.csv"))
    assert (tmp_path / "labels.csv").read_text() == out
    code, _, err = cli(capsys, "set", "create")
    assert code == 2 and "--task" in err

    got = ok_json(capsys, "task", "close", "T-2")
    assert got["state"] == "closed" and ok_json(capsys, "queue", "--reader", "bob", "--task", "T-2") == []


def test_every_labels_command_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "labels.md").read_text()
    section = doc[doc.index("## Labeling tasks"):]
    commands = [c.name for c in labels_cli.app.registered_commands if c.name]
    for group in labels_cli.app.registered_groups:
        assert group.typer_instance is not None
        commands += [f"{group.name} {c.name}" for c in group.typer_instance.registered_commands if c.name]
    assert len(commands) == 39
    missing = [c for c in commands if f"medcycle labels {c}" not in section]
    assert not missing, f"document these in the Labeling tasks section of docs/labels.md: {missing}"
