"""The main job (`make run` → `medcycle demo`) runs the whole cycle end to end, and a second run adds nothing.

The test runs the ``quick`` profile (the same stages on smaller images and shorter training); ``make run`` runs
``full``. It checks what each stage left behind in the platform, not only what the demo printed.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from sqlalchemy import func, select

from medcycle.auth.users import authenticate
from medcycle.datasets import versions
from medcycle.demo import run_demo
from medcycle.demo.context import MODEL, PRODUCTION, XR_DATASET, profile_of
from medcycle.demo.readers import READERS, SENIOR, blob, outline
from medcycle.errors import UsageError
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.store.base import Base
from tests.demo_home import DemoHome

# Logs of what happened rather than what exists: a second run may add to them (each ingest call is an ingest
# run; logins, page views and reads are audited).
LOGS = {"audit_events", "tokens", "ingest_runs"}
STAGES = ("Generate the demo data", "What data do we have", "Dataset v1", "labeling task", "Agreement and consensus",
          "Dataset v2", "hypothesis", "training runs", "release gates", "REST and DICOM C-STORE",
          "injected drift", "Check the object store", "Where to look")


def _counts(platform: Platform) -> dict[str, int]:
    from medcycle.store.registry import import_all_tables

    import_all_tables()
    with platform.session(write=False) as s:
        return {t.name: int(s.scalar(select(func.count()).select_from(t)) or 0)
                for t in Base.metadata.sorted_tables if t.name not in LOGS}


@pytest.fixture
def demo_copy(demo_home: DemoHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """A copy of the session's demo home, opened with the settings the CLI had (``MEDCYCLE_HOME`` only)."""
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    shutil.copytree(demo_home.home, tmp_path / "home", symlinks=True)
    p = Platform(load_settings(home=tmp_path / "home"))
    try:
        yield p
    finally:
        p.close()


def test_the_whole_cycle_then_a_second_run_adds_nothing(demo_home: DemoHome, demo_copy: Platform) -> None:
    from medcycle.hypotheses import links
    from medcycle.hypotheses.lookup import get_hypothesis
    from medcycle.labels import tasks
    from medcycle.models import registry
    from medcycle.monitoring import alerts
    from medcycle.monitoring.tables import PredictionRow, ReportRow
    from medcycle.serving.results import job_out
    from medcycle.training.demo_data import read_studies

    # The first run is `medcycle demo --profile quick` by the CLI, made once per session (tests/demo_home.py, with
    # a pinned de-identification key: the same pseudonyms, hence splits and models, every run); the guides' examples
    # start from the same home. This test checks a copy of it, then runs the demo a second time on the copy.
    p = demo_copy
    token = demo_home.token
    text = demo_home.stdout
    for stage in STAGES:
        assert stage in text, stage
    assert "LEAKS" not in text and "left out" not in text
    where = text[text.index("Where to look"):]
    states = re.findall(r"\(stage \d+, ([^)]*)\)", where)
    assert len(states) >= 20 and all(s == "ok" or "not mounted" in s or "placeholder" in s for s in states), states

    with p.session(write=False) as s:
        assert authenticate(s, token).role.value == "admin"
        log = versions.log(s, XR_DATASET)
        assert sorted(t for v in log for t in v.tags) == ["v1", "v2"]
        v1, v2 = versions.get_version(s, f"{XR_DATASET}@v1"), versions.get_version(s, f"{XR_DATASET}@v2")
        lesions = sum(r["label"] == "lesion" for r in read_studies(p.settings.home / "demo-data" / "cycle")
                      if r["kind"] == "xr")
        assert v1.n_items == profile_of("quick").radiographs and v2.n_items > v1.n_items  # v2 adds the consensus masks
        assert v1.leakage.get("ok", True) and v2.split_counts.keys() == v1.split_counts.keys()
        task = tasks.get_task(s, "T-1")
        assert task.readers == tuple(sorted(r.name for r in READERS)) and task.items == v1.n_items
        assert task.done == task.items and task.item_states["resolved"] > 0  # disagreements went to the senior
        assert v2.n_items - v1.n_items == pytest.approx(lesions, abs=3)  # one consensus mask per lesion, about
        hyp = get_hypothesis(s, "H-1")
        assert hyp.status == "exploring"
        linked = {link.kind.value for link in links.links(s, hyp.id)}
        assert linked == {"run", "dataset"}
        versions_ = registry.versions(s, MODEL)
        assert [v.version for v in versions_] == [1, 2]
        assert all(registry.gate_reports(s, v.ref)[0].passed for v in versions_)
        history = [(m.action, m.to_ref) for m in registry.alias_history(s, MODEL, PRODUCTION)]
        assert history == [("promote", f"{MODEL}@v1"), ("promote", f"{MODEL}@v2"), ("rollback", f"{MODEL}@v1")]
        assert registry.resolve(s, f"{MODEL}@{PRODUCTION}").version == 1
        drift_alerts = [a for a in alerts.list_alerts(s) if a.kind == "drift"]
        assert [a.model_version for a in drift_alerts] == [f"{MODEL}@v2"]
        assert drift_alerts[0].state == "acknowledged" and drift_alerts[0].severity == "page"
        by_version = dict(s.execute(select(PredictionRow.model_version, func.count())
                                    .group_by(PredictionRow.model_version)).all())
        quick = profile_of("quick")
        assert by_version[f"{MODEL}@v2"] == quick.rest_studies + 1 + quick.cstore_studies + quick.drift_studies
        assert by_version[f"{MODEL}@v1"] == 1  # the study after the rollback
        outcomes = dict(s.execute(select(PredictionRow.outcome, func.count()).group_by(PredictionRow.outcome)).all())
        assert outcomes.get("refused", 0) >= 1 and outcomes["ok"] >= quick.drift_studies  # the MR slice is refused
        assert s.scalar(select(func.count()).select_from(ReportRow).where(ReportRow.slot == "demo-cycle")) == 1
        last = s.scalar(select(PredictionRow.job_id).where(PredictionRow.model_version == f"{MODEL}@v1"))
    assert last is not None
    answer = job_out(p, p.jobs.get(last))
    assert answer.result is not None and answer.result.model.ref == f"{MODEL}@v1"
    assert answer.result.model.requested == f"{MODEL}@{PRODUCTION}"
    assert "all intact" in text

    first = _counts(p)
    again = io.StringIO()
    fresh = run_demo(p, Console(file=again, width=300), profile="quick")
    assert _counts(p) == first
    with p.session(write=False) as s:  # the token a run returns logs an admin in (earlier demo tokens revoked)
        assert authenticate(s, fresh).role.value == "admin"
    second = again.getvalue()
    assert "every reading was already in" in second and "rolled back before" in second
    assert "left out" not in second


def test_simulated_readers_follow_their_skill() -> None:
    size = 128
    truth = np.zeros((size, size), bool)
    truth[40:60, 50:70] = True
    empty = np.zeros_like(truth)
    expert, novice = READERS[0], READERS[-1]
    items = [f"item-{i}" for i in range(300)]
    found = {r.name: np.mean([r.read(truth, i)[0].any() for i in items]) for r in (expert, novice)}
    false = {r.name: np.mean([r.read(empty, i)[0].any() for i in items]) for r in (expert, novice)}
    assert found[expert.name] == pytest.approx(expert.sensitivity, abs=0.05)
    assert found[novice.name] == pytest.approx(novice.sensitivity, abs=0.08)
    assert false[expert.name] == pytest.approx(1 - expert.specificity, abs=0.04)
    assert false[novice.name] == pytest.approx(1 - novice.specificity, abs=0.06)
    mask, seconds = SENIOR.read(truth, "item-1")
    assert np.array_equal(mask, SENIOR.read(truth, "item-1")[0]) and seconds >= 5  # the same reading every time
    rng = np.random.default_rng(0)
    drawn = outline(truth, rng, 2.0, 0.1)
    dice = 2 * (drawn & truth).sum() / (drawn.sum() + truth.sum())
    assert 0.6 < dice < 1.0
    spot = blob((size, size), rng)
    assert spot.any() and spot.sum() < 0.05 * size * size


def test_an_unknown_profile_is_refused(sqlite_platform: Platform) -> None:
    with pytest.raises(UsageError, match="unknown demo profile") as info:
        run_demo(sqlite_platform, Console(file=io.StringIO()), profile="huge")
    assert "full" in (info.value.hint or "")
