"""A pull whose --split / --query subset selects no item is refused: it exited 0 having made an empty folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medcycle.auth import audit
from medcycle.datasets import transfer, versions
from medcycle.errors import UsageError
from medcycle.platform import Platform
from medcycle.settings import load_settings
from tests.datasets.conftest import labels_csv, seed_home_catalog, use_remote
from tests.datasets.test_cli import cli, home  # noqa: F401 - the CLI tests' home fixture

NOTHING = 'modality == "PT"'  # the synthetic catalog holds CT, MR, CR and DX only


def cache_files(platform: Platform) -> list[Path]:
    root = Path(platform.settings.resolved_cache_dir)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def pull_events(platform: Platform) -> list[tuple[str, str, str | None, str]]:
    with platform.session() as s:
        return [(e.outcome, e.details["error"], e.target_id, e.details["dest"])
                for e in reversed(audit.query(s, action="dataset.pull"))]


def a_train_patient(platform: Platform, ref: str) -> str:
    with platform.session() as s:
        version_id = versions.resolve(s, ref).id
    return next(i.patient for i in versions.load_manifest(platform.objects, version_id).items if i.split == "train")


def test_a_subset_that_selects_nothing_is_refused_and_makes_nothing(
    platform: Platform, frozen: str, tmp_path: Path
) -> None:
    use_remote(platform)  # through the cache: the refusal must not even fetch the manifest into it
    with platform.session() as s:
        version_id = versions.resolve(s, frozen).id
    patient = a_train_patient(platform, frozen)
    cases = [
        ({"query": NOTHING}, f"--query {NOTHING!r}"),
        ({"split": "test", "query": f'patient == "{patient}"'}, "--split test and --query"),  # splits are by patient
    ]
    dests = []
    for i, (subset, named) in enumerate(cases):
        dest = tmp_path / f"new-{i}" / "data"
        dests.append(dest)
        with pytest.raises(UsageError) as err:
            transfer.pull(platform, frozen, dest, actor="alice", **subset)  # type: ignore[arg-type]
        message, hint = err.value.message, err.value.hint or ""
        assert named in message and "selects no item" in message
        assert frozen in message and version_id[:12] in message and "96 items" in message
        assert "train (" in hint and "val (" in hint and "test (" in hint
        if "query" in subset:
            assert "medcycle data query" in hint
        assert err.value.details["items_in_version"] == 96
        assert not (tmp_path / f"new-{i}").exists()  # not even the parent
    assert cache_files(platform) == []  # no manifest, no object
    assert pull_events(platform) == [("failed", "bad_request", version_id, str(d)) for d in dests]

    # an unknown split is refused the same way, before any folder, naming the splits there are
    with pytest.raises(UsageError, match="no split 'holdout'") as err:
        transfer.pull(platform, frozen, tmp_path / "holdout", split="holdout")
    assert "train (" in (err.value.hint or "") and not (tmp_path / "holdout").exists()
    # a subset that selects something still pulls, and a split alone is never empty
    report = transfer.pull(platform, frozen, tmp_path / "ok", split="test", query='modality != "PT"')
    assert report.items > 0 and (tmp_path / "ok").is_dir()


def test_an_existing_folder_is_left_as_it_was(platform: Platform, frozen: str, tmp_path: Path) -> None:
    """A refused subset pull into a folder an earlier pull filled removes nothing from it."""
    dest = tmp_path / "d"
    first = transfer.pull(platform, frozen, dest, split="val")
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    with pytest.raises(UsageError, match="selects no item"):
        transfer.pull(platform, frozen, dest, query=NOTHING)
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before and first.items > 0


def test_the_cli_exits_2_with_the_message_and_makes_no_folder(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    assert cli(capsys, "init")[0] == 0
    studies = seed_home_catalog(6, 2)
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(labels_csv(studies))
    assert cli(capsys, "dataset", "create", "cxr", "--query", "")[0] == 0
    assert cli(capsys, "dataset", "labels", "import", "cxr", str(csv_file))[0] == 0
    assert cli(capsys, "dataset", "freeze", "cxr", "--tag", "v1", "--split", "train=0.5,test=0.5")[0] == 0
    dest = tmp_path / "out" / "cxr"
    for args in (["--query", NOTHING], ["--split", "test", "--query", NOTHING]):
        code, out, err = cli(capsys, "dataset", "pull", "cxr@v1", "--to", str(dest), *args)
        assert code == 2, (out, err)
        assert "selects no item of cxr@v1" in err and "12 items" in err and "medcycle data query" in err
        assert "test (" in err and "train (" in err
        assert not (tmp_path / "out").exists()
    code, out, _ = cli(capsys, "dataset", "pull", "cxr@v1", "--to", str(dest), "--query", NOTHING, "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "bad_request"
    assert not (tmp_path / "out").exists()
    with Platform(load_settings()) as p:
        cache = Path(p.settings.resolved_cache_dir)
        assert not cache.exists() or not [f for _, _, fs in os.walk(cache) for f in fs]
        events = pull_events(p)
    assert [e[:2] for e in events] == [("failed", "bad_request")] * 3
