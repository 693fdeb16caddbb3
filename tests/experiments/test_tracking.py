"""The SDK end to end on SQLite and PostgreSQL: metrics exact and compact, params/tags, capture and verdict,
stdout, images, models and large artifacts."""

from __future__ import annotations

import hashlib
import io
import math
import os
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from medcycle.errors import UsageError
from medcycle.experiments import runs
from medcycle.experiments.tables import CHUNK_POINTS, MetricChunkRow, MetricSeriesRow, RunRow
from medcycle.objects.tables import ObjectRefRow
from medcycle.platform import Platform
from tests.experiments.conftest import StartRun, git, make_repo


def test_metrics_round_trip_exactly(platform: Platform, track: StartRun) -> None:
    run = track()
    rng = np.random.default_rng(0)
    values = [float(v) for v in rng.normal(size=500)] + [math.nan, math.inf, -math.inf, 5e-324, -0.0, 1e308]
    steps = [int(s) for s in rng.integers(-10, 10**12, size=len(values))]
    times = [1.7e9 + i * 0.001 + 1e-7 for i in range(len(values))]
    for s, t, v in zip(steps, times, values, strict=True):
        run.log_metric("loss", v, step=s, timestamp=t)
        if s % 7 == 0:
            run.flush()  # many deliveries extend the same chunk
    for i in range(10):
        run.log_metric("auto", i * 0.5)  # steps 0..9 by default
    run.log_metrics({"val/dice": np.float32(0.75), "val/auc": 0.9}, step=3)
    run.end()
    with platform.session() as s:
        loss = runs.metric_history(s, run.id, ["loss"])["loss"]
        assert list(loss.steps) == steps and list(loss.times) == times
        assert [repr(v) for v in loss.values] == [repr(v) for v in values]  # bit-exact, NaN and -0.0 included
        auto = runs.read_series(s, run.id, "auto")
        assert list(auto.steps) == list(range(10)) and list(auto.values) == [i * 0.5 for i in range(10)]
        detail = runs.get_run(s, run.id)
        m = detail.metrics["loss"]
        finite = [v for v in values if math.isfinite(v)]
        assert m.count == len(values) and m.last == 1e308 and m.last_step == steps[-1]
        assert m.min == min(finite) and m.max == max(finite)
        assert detail.metrics["val/dice"].last == float(np.float32(0.75)) and detail.metrics["val/dice"].last_step == 3
        assert detail.summary.status == "finished" and detail.summary.ended_at is not None


def test_metric_series_are_stored_compactly(platform: Platform, track: StartRun) -> None:
    run = track()
    n = 2 * CHUNK_POINTS + 100
    for step in range(n):
        run.log_metrics({"a": step, "b": -step, "c": step / 3}, step=step)
        if step % 5000 == 0:
            run.flush()
    run.end()
    with platform.session() as s:
        chunk_rows = s.scalar(select(func.count()).select_from(MetricChunkRow).where(MetricChunkRow.run_id == run.id))
        series_rows = s.scalar(select(func.count()).select_from(MetricSeriesRow)
                               .where(MetricSeriesRow.run_id == run.id))
        assert series_rows == 3
        assert chunk_rows == 3 * 3  # ceil(n / CHUNK_POINTS) per key, though delivered in many batches
        assert (chunk_rows or 0) + (series_rows or 0) < 3 * n / 1000
        assert list(runs.read_series(s, run.id, "b").values) == [float(-i) for i in range(n)]


def test_params_tags_and_run_attributes(platform: Platform, track: StartRun) -> None:
    run = track("chest", name="baseline", hypothesis="H-3", tags={"team": "chest"},
                params={"lr": 1e-3, "model": {"name": "unet", "depth": 4}, "augment": True, "dims": [1, 2]})
    run.log_param("epochs", np.int64(10))
    run.set_tag("team", "chest-ct")
    with pytest.raises(UsageError):
        run.log_metric("", 1.0)
    run.end()
    with platform.session() as s:
        d = runs.get_run(s, "baseline")
        assert d.summary.params == {"augment": "true", "dims": "[1, 2]", "epochs": "10", "lr": "0.001",
                                    "model.depth": "4", "model.name": "unet"}
        assert d.summary.tags == {"team": "chest-ct"}
        assert (d.summary.project, d.summary.hypothesis, d.summary.name) == ("chest", "H-3", "baseline")
        assert runs.resolve_run(s, run.id[:6]).id == run.id
    with pytest.raises(UsageError):
        run.log_metric("x", 1.0)


def test_capture_holds_commit_diff_packages_seeds_and_dataset(
    platform: Platform, track: StartRun, dirty_repo: Path
) -> None:
    from tests.experiments.datasets import frozen_version

    ref, digest = frozen_version(platform)
    run = track(capture=True, code_path=dirty_repo, dataset=ref)
    assert run.seed(7, deterministic=False) == 7
    assert np.random.rand() == np.random.RandomState(7).rand()
    run.end()
    with platform.session() as s:
        d = runs.get_run(s, run.id)
        diff = runs.read_diff(s, platform.objects, run.id)
        packages = runs.read_packages(s, platform.objects, run.id)
    git_info = d.capture["git"]
    assert git_info["commit"] == git(dirty_repo, "rev-parse", "HEAD") and git_info["branch"] == "main"
    assert git_info["dirty"] is True and git_info["changed_files"] == ["train.py"]
    assert git_info["untracked"] == ["notes.txt"] and git_info["pushed"] is False
    assert diff is not None and b"+lr = 0.01" in diff and b"-lr = 0.001" in diff
    assert any(line.startswith("numpy==") for line in packages)
    assert d.capture["packages"]["hash"] == hashlib.sha256(("\n".join(packages) + "\n").encode()).hexdigest()
    assert d.capture["entry"]["argv"] == sys.argv and d.capture["system"]["python"]["version"]
    assert d.seeds["seed"] == 7 and d.seeds["numpy"] and d.seeds["random"]
    assert d.summary.dataset == ref and d.summary.dataset_digest == digest
    assert d.summary.verdict_reasons == ["unpushed commit", "dirty tree"]
    with platform.session() as s:  # the diff and the freeze are kept from garbage collection
        owners = set(s.scalars(select(ObjectRefRow.digest).where(ObjectRefRow.owner_id == run.id)))
    assert d.diff_digest in owners and d.packages_digest in owners


def test_verdict_reasons(platform: Platform, track: StartRun, tmp_path: Path) -> None:
    from tests.experiments.datasets import frozen_version

    ref, _ = frozen_version(platform)
    clean = make_repo(tmp_path / "clean", remote=tmp_path / "remote.git")
    good = track(capture=True, code_path=clean, dataset=ref)
    good.seed(1, deterministic=False)
    good.end()
    unknown_data = track(capture=True, code_path=clean, dataset="0" * 64)
    unknown_data.seed(1, deterministic=False)
    unknown_data.end()
    (tmp_path / "nowhere").mkdir()
    bare = track(capture=True, code_path=tmp_path / "nowhere")
    bare.end()
    git(clean, "commit", "-q", "--allow-empty", "-m", "local only")
    unpushed = track(capture=True, code_path=clean)
    unpushed.end()
    off = track(capture=False)
    off.end()
    with platform.session() as s:
        verdict = {r.id: (s.get_one(RunRow, r.id).verdict, s.get_one(RunRow, r.id).verdict_reasons)
                   for r in (good, unknown_data, bare, unpushed, off)}
    assert verdict[good.id] == ("reproducible", [])
    assert verdict[unknown_data.id] == ("not reproducible", ["data not versioned"])  # names no frozen version
    assert verdict[bare.id][1] == ["not a git repository", "unseeded", "data not versioned"]
    assert verdict[unpushed.id][1] == ["unpushed commit", "unseeded", "data not versioned"]
    assert verdict[off.id][1] == ["no code capture", "unseeded", "data not versioned"]


def test_stdout_and_stderr_are_captured(
    platform: Platform, track: StartRun, capsys: pytest.CaptureFixture[str]
) -> None:
    run = track(capture_output=True)
    print("epoch 1: loss 0.5")
    sys.stderr.write("warning: slow disk\n")
    print("epoch 2: loss 0.25", flush=True)
    run.end()
    print("after the run")
    seen = capsys.readouterr()
    assert "epoch 1" in seen.out and "after the run" in seen.out and "slow disk" in seen.err  # terminal unchanged
    with platform.session() as s:
        assert runs.read_log(s, run.id, stream="stdout") == "epoch 1: loss 0.5\nepoch 2: loss 0.25\n"
        assert runs.read_log(s, run.id, stream="stderr") == "warning: slow disk\n"
        assert "after the run" not in runs.read_log(s, run.id)


def test_images_are_rendered_and_stored(platform: Platform, track: StartRun) -> None:
    run = track()
    xray = np.linspace(0, 4000, 64 * 48).reshape(64, 48)
    d2 = run.log_image("val/xray", xray, step=1)
    vol = np.zeros((16, 32, 32), dtype=np.float32)
    vol[6:10, 10:20, 10:20] = 1000.0
    mask = (vol > 0).astype(np.uint8)
    d3 = run.log_image("val/ct", vol, mask=mask, step=1, slices=2)
    run.end()
    with platform.session() as s:
        arts = {a.name: a for a in runs.get_run(s, run.id).artifacts}
    assert arts["val/xray"].digest == d2 and arts["val/ct"].kind == "image"
    png = Image.open(io.BytesIO(platform.objects.get(d3)))
    assert png.format == "PNG" and png.size == (arts["val/ct"].meta["width"], arts["val/ct"].meta["height"])
    assert arts["val/ct"].meta["panels"] == ["slice 6", "slice 7", "MIP"]
    pixels = np.asarray(png)
    assert (pixels == [255, 64, 64]).all(axis=-1).any()  # the mask contour is drawn
    assert Image.open(io.BytesIO(platform.objects.get(d2))).size == (48, 64)


def test_models_and_inputs_by_digest(platform: Platform, track: StartRun, tmp_path: Path) -> None:
    import torch

    run = track()
    model = torch.nn.Linear(4, 2)
    digest = run.log_model(model, step=5)
    assert run.log_model(model, "again") == digest  # the same weights always get the same digest
    ckpt = tmp_path / "pretrained.pt"
    ckpt.write_bytes(b"weights")
    run.log_input_model(ckpt)
    run.log_input_model("a" * 64, name="backbone")
    run.end()
    state = torch.load(io.BytesIO(platform.objects.get(digest)), weights_only=True)
    assert torch.equal(state["weight"], model.state_dict()["weight"])
    with platform.session() as s:
        arts = runs.get_run(s, run.id).artifacts
    assert [(a.name, a.kind) for a in arts] == [
        ("model", "model"), ("again", "model"), ("pretrained.pt", "input"), ("backbone", "input")]
    assert arts[2].digest == hashlib.sha256(b"weights").hexdigest() and arts[3].digest == "a" * 64


def test_large_artifact_is_streamed(sqlite_platform: Platform, tmp_path: Path) -> None:
    from medcycle.experiments.sdk import start_run

    big = tmp_path / "checkpoint.bin"
    h = hashlib.sha256()
    with big.open("wb") as out:
        for i in range(65):  # 65 MiB, more than any buffer
            block = hashlib.sha256(str(i).encode()).digest() * (1024 * 1024 // 32)
            out.write(block)
            h.update(block)
    run = start_run("big", platform=sqlite_platform, journal_dir=tmp_path / "j", capture=False,
                    capture_output=False, resources=False)
    tracemalloc.start()
    try:
        digest = run.log_artifact(big, kind="model")
        assert run.flush(timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    run.end()
    assert digest == h.hexdigest()
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes: the file was read into memory"
    assert sqlite_platform.objects.stat(digest).size == 65 * 1024 * 1024
    os.remove(big)  # the store has its own copy
    assert sqlite_platform.objects.verify(digest)


def test_failed_and_killed_runs(platform: Platform, track: StartRun) -> None:
    failing, stopped = track(), track()

    def diverge() -> None:
        with failing:
            failing.log_metric("loss", 1.0)
            raise RuntimeError("diverged")

    def interrupt() -> None:
        with stopped:
            raise KeyboardInterrupt

    with pytest.raises(RuntimeError):
        diverge()
    with pytest.raises(KeyboardInterrupt):
        interrupt()
    with platform.session() as s:
        assert s.get_one(RunRow, failing.id).status == "failed"
        assert s.get_one(RunRow, stopped.id).status == "killed"
    assert not failing.journal.path.exists()  # delivered journals are removed


def test_forked_children_do_not_write_into_the_run(sqlite_platform: Platform, tmp_path: Path) -> None:
    import warnings

    from medcycle.experiments.sdk import start_run

    run = start_run("fork", platform=sqlite_platform, journal_dir=tmp_path, capture=False, resources=False)
    print("from the parent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+); the child only prints
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            print("from the child")
            try:
                run.log_metric("x", 1.0)
            except UsageError as exc:
                code = 0 if "forked child" in exc.message else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    run.log_metric("x", 2.0)
    run.end()
    with sqlite_platform.session() as s:
        assert runs.read_log(s, run.id) == "from the parent\n"
        assert list(runs.read_series(s, run.id, "x").values) == [2.0]


def test_odd_text_is_stored_and_bad_metadata_refused(platform: Platform, track: StartRun) -> None:
    run = track(capture_output=True)
    run.log_params({"path": "a\x00b", "arg": "caf\udce9"})  # NUL, and a non-UTF-8 argv byte (surrogateescape)
    print("byte \udcff and nul \x00")
    with pytest.raises(UsageError):
        run.log_artifact(b"x", "x.bin", meta={"score": math.nan})
    run.end()
    with platform.session() as s:
        params = runs.get_run(s, run.id).summary.params
        assert params == {"arg": "caf\\udce9", "path": "a\\x00b"}
        assert runs.read_log(s, run.id) == "byte \\udcff and nul \\x00\n"


def test_logged_files_are_snapshots_and_big_ones_must_stay(platform: Platform, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from medcycle.experiments import sdk
    from tests.experiments.conftest import FlakySink

    best = tmp_path / "best.pt"
    best.write_bytes(b"epoch 1")
    sink = FlakySink(platform)
    sink.down = True  # nothing is uploaded until the end
    run = sdk.start_run("snap", sink=sink, journal_dir=tmp_path / "j", capture=False, capture_output=False,
                        resources=False)
    first = run.log_artifact(best)
    best.write_bytes(b"epoch 2")  # overwritten at once, as training loops do
    monkeypatch.setattr(sdk, "SNAPSHOT_MAX", 4)  # now "big": uploaded from its path
    second = run.log_artifact(best)
    best.unlink()  # ... which vanishes before the upload
    sink.down = False
    assert run.end() is True
    assert platform.objects.get(first) == b"epoch 1"
    with platform.session() as s:
        arts = runs.get_run(s, run.id).artifacts
    assert [a.digest for a in arts] == [first, second]
    assert "missing" not in arts[0].meta and "missing" in arts[1].meta
    assert not platform.objects.exists(second)


def test_a_run_naming_a_hypothesis_is_linked_to_it(platform: Platform, track: StartRun) -> None:
    from medcycle.hypotheses import register
    from medcycle.hypotheses.links import links
    from tests.experiments.datasets import frozen_version

    ref, digest = frozen_version(platform)
    with platform.session() as s:
        hyp = register.create(s, "Nodule detection pays off", project="proj", actor="alice")
        hyp_id, hyp_ref = hyp.id, f"H-{hyp.id}"
    linked = track(hypothesis=hyp_ref, dataset=ref)
    linked.end()
    lost = track(hypothesis="H-999")  # an unknown hypothesis never loses the run
    lost.end()
    with platform.session() as s:
        got = {(link.kind.value, link.target, link.digest) for link in links(s, hyp_id)}
        assert runs.get_run(s, lost.id).summary.hypothesis == "H-999"
    assert got == {("run", linked.id, None), ("dataset", ref, digest)}
