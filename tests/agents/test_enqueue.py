"""``run enqueue``: the code of the submitting repository is captured (commit, diff, unpushed bundle, files)."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import typer

from medcycle.agents.enqueue import build_task, enqueue
from medcycle.agents.spec import TaskSpec
from medcycle.agents.submit import REF_KIND, submit
from medcycle.cli import agents as agents_cli
from medcycle.cli import runs as runs_cli
from medcycle.cli.context import CliState
from medcycle.cli.errors import run as run_cli
from medcycle.errors import NotFound, UsageError, ValidationFailed
from medcycle.objects.refs import refs_of
from medcycle.platform import Platform
from medcycle.training.config import example
from tests.agents.conftest import commit, git, make_repo, store_env
from tests.experiments.datasets import frozen_version

root = typer.Typer()
root.add_typer(runs_cli.app, name="run")
root.add_typer(agents_cli.app, name="agent")


@root.callback()
def _root(ctx: typer.Context) -> None:
    ctx.obj = CliState()
    ctx.call_on_close(ctx.obj.close)


TRAIN = "import sys\nprint('lr', 0.1)\n"


def untracked_files(platform: Platform, digest: str) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(platform.objects.get(digest)), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_unpushed_dirty_commit_travels_as_bundle_diff_and_files(sqlite_platform: Platform, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "code", {"train.py": TRAIN}, remote=tmp_path / "remote.git")
    head = commit(repo, {"train.py": TRAIN.replace("0.1", "0.2")}, "unpushed")
    (repo / "train.py").write_text(TRAIN.replace("0.1", "0.3"))  # dirty
    (repo / "cfg.yaml").write_text("lr: 0.3\n")  # untracked, named in argv
    (repo / "junk.bin").write_bytes(b"x" * 100)  # untracked, not named: stays home

    done = enqueue(sqlite_platform, ["python", "train.py", "cfg.yaml"], queue="gpu", cwd=repo,
                   project="chest", priority=3, outputs=["out.txt"])
    code = done.spec.code
    assert code is not None
    assert (code.commit, code.branch, code.remote, code.workdir) == (head, "main", f"file://{tmp_path}/remote.git", ".")
    assert sqlite_platform.objects.get(code.diff_digest or "") == subprocess.run(
        ["git", "-C", str(repo), "diff", "HEAD", "--binary"], capture_output=True, check=True).stdout
    bundle = tmp_path / "code.bundle"
    bundle.write_bytes(sqlite_platform.objects.get(code.bundle_digest or ""))
    assert git(repo, "bundle", "list-heads", str(bundle)).split()[0] == head
    assert git(repo, "bundle", "verify", "-q", str(bundle)) == ""
    assert untracked_files(sqlite_platform, code.untracked_digest or "") == {"cfg.yaml": "lr: 0.3\n"}
    assert done.capture.pushed is False and done.capture.dirty is True and done.capture.untracked == ["cfg.yaml"]
    # the job carries exactly the spec; its objects are kept from gc under the task
    job = sqlite_platform.jobs.get(done.job.id)
    assert (job.queue, job.priority) == ("gpu", 3)
    assert TaskSpec.from_payload(job.payload) == done.spec
    with sqlite_platform.session() as s:
        refs = refs_of(s, [code.diff_digest or "", code.bundle_digest or "", code.untracked_digest or ""])
    assert all(owners == [(REF_KIND, job.id)] for owners in refs.values())
    assert done.spec.packages_hash and sqlite_platform.objects.get(done.spec.packages_digest or "").count(b"==") > 10


def test_pushed_clean_tree_needs_no_bundle_or_diff(sqlite_platform: Platform, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "code", {"src/train.py": TRAIN}, remote=tmp_path / "remote.git")
    spec, capture = build_task(sqlite_platform, ["python", "train.py"], cwd=repo / "src")
    assert spec.code is not None
    assert (spec.code.diff_digest, spec.code.bundle_digest, spec.code.untracked_digest) == (None, None, None)
    assert spec.code.workdir == "src" and capture.pushed is True


def test_repository_without_remote_bundles_its_whole_history(sqlite_platform: Platform, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "code", {"train.py": TRAIN})
    spec, _ = build_task(sqlite_platform, ["python", "train.py"], cwd=repo)
    assert spec.code is not None and spec.code.remote == str(repo.resolve()) and spec.code.bundle_digest


def test_outside_a_repository_only_the_named_files_travel(sqlite_platform: Platform, tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "job.py").write_text("print(1)\n")
    spec, capture = build_task(sqlite_platform, ["python", "job.py"], cwd=folder)
    assert spec.code is not None and spec.code.commit is None and not capture.repository
    assert untracked_files(sqlite_platform, spec.code.untracked_digest or "") == {"job.py": "print(1)\n"}


def test_bad_input_is_refused_with_a_hint(sqlite_platform: Platform, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "code", {"train.py": TRAIN})
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("x: 1\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    cases: list[tuple[type[Exception], dict[str, object], str]] = [
        (UsageError, {"args": []}, "nothing to run"),
        (UsageError, {"include": [outside]}, "outside"),
        (NotFound, {"datasets": ["nope@v1"]}, "nope"),
        (UsageError, {"args": ["python", "x.py"], "cwd": empty}, "no commit yet"),
    ]
    for error, kwargs, text in cases:
        args = kwargs.pop("args", ["python", "train.py"])
        cwd = kwargs.pop("cwd", repo)
        with pytest.raises(error, match=text) as info:
            build_task(sqlite_platform, args, cwd=cwd, **kwargs)  # type: ignore[arg-type]
        assert info.value.hint  # type: ignore[attr-defined]
    spec, _ = build_task(sqlite_platform, ["python", "train.py"], cwd=repo)
    for bad in ({"outputs": ["../up.txt"]}, {"outputs": ["/abs"]}, {"env": {"MEDCYCLE_HOME": "/x"}}):
        with pytest.raises(UsageError):
            submit(sqlite_platform, dataclasses.replace(spec, **bad), queue="q")  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed, match="non-empty list"):
        submit(sqlite_platform, dataclasses.replace(spec, command=[]), queue="q")


def test_training_config_becomes_a_train_run_with_its_dataset(sqlite_platform: Platform, tmp_path: Path) -> None:
    ref, _ = frozen_version(sqlite_platform)
    repo = make_repo(tmp_path / "code", {"README": "x\n"})
    (repo / "configs").mkdir()
    (repo / "configs" / "cls.json").write_text(json.dumps(example("classification-2d", ref)))
    spec, capture = build_task(sqlite_platform, ["configs/cls.json"], cwd=repo, hypothesis="H-1")
    assert spec.command == ["medcycle", "train", "run", "configs/cls.json", "--dataset", ref,
                            "--to", "${MEDCYCLE_DATASET_CXR}", "--set", "tracking.hypothesis=H-1"]
    assert spec.datasets == [ref] and spec.project == "demo-training" and spec.hypothesis == "H-1"
    assert spec.params["task"] == "classification-2d"
    assert capture.untracked == ["configs/cls.json"]  # the untracked config travels with the task
    (repo / "configs" / "bad.json").write_text(json.dumps({"task": "classification-2d"}))
    with pytest.raises(ValidationFailed):
        build_task(sqlite_platform, ["configs/bad.json"], cwd=repo)


def test_cli_enqueue_prints_the_job_id(sqlite_platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "code", {"train.py": TRAIN})
    for key, value in store_env(sqlite_platform).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(repo)
    code = run_cli(root, ["run", "enqueue", "--queue", "gpu", "--priority", "2", "--param", "lr=0.01",
                          "--idempotency-key", "k1", "--", "python", "train.py", "--epochs", "3"])
    out = capsys.readouterr()
    assert code == 0, out.err
    job_id = out.out.strip()
    job = sqlite_platform.jobs.get(job_id)
    assert job.payload["command"] == ["python", "train.py", "--epochs", "3"]
    assert job.payload["params"] == {"lr": 0.01} and job.priority == 2
    assert "bundle of unpushed commits" in out.err
    code = run_cli(root, ["run", "enqueue", "--queue", "gpu", "--idempotency-key", "k1", "--json", "--", "python",
                          "train.py"])
    again = json.loads(capsys.readouterr().out)
    assert code == 0 and again["job_id"] == job_id  # the same key returns the first task
    assert run_cli(root, ["run", "enqueue", "--queue", "gpu", "--param", "oops", "--", "python", "x.py"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
