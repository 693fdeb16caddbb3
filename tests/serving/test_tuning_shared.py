"""The pass size measured once per machine and model version: workers warming together measure it once, the others
(and later ones) read it; another network, batch or thread count, a damaged or an old measurement is taken again."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from medcycle.platform import Platform
from medcycle.serving import tuning
from medcycle.serving.predictor import Predictor
from tests.serving.core_fixtures import CLS
from tests.serving.test_forward_passes import Linear


def _predictor(platform: Platform, max_batch: int = 8, b: float = 0.003) -> tuple[Predictor, Linear]:
    predictor = Predictor.load(platform, CLS, max_batch=max_batch, forward_batch=0)
    model = Linear(predictor.model, b)
    predictor.model = model
    return predictor, model


def _kept(platform: Platform) -> list[Path]:
    return sorted((platform.settings.resolved_cache_dir / "serving").glob("passes-*.json"))


def test_the_first_worker_measures_and_the_next_reads_what_it_found(srv_platform: Platform,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    first, timed = _predictor(srv_platform)
    first.warm()
    assert first.chunk == 8 and set(first.tuning) == {1, 2, 4, 8}
    assert len(timed.sizes) > 10  # measured: every size, several times
    [kept] = _kept(srv_platform)
    body = json.loads(kept.read_text())
    assert body["chunk"] == 8 and body["for"]["weights"] == first.version.weights_digest
    assert body["for"]["max_batch"] == 8 and body["for"]["threads"] >= 1 and body["for"]["cpu"]

    second, untimed = _predictor(srv_platform)
    with caplog.at_level(logging.INFO, logger="medcycle.serving.predictor"):
        second.warm()
    # the warm-up passes only, nothing timed: one input, then one pass of the size read (its memory faulted in
    # before the first request, not by it)
    assert untimed.sizes == [1, first.chunk]
    assert second.chunk == first.chunk and second.tuning == first.tuning
    assert "as measured on this machine" in caplog.text


def test_another_batch_or_thread_count_is_measured_again(srv_platform: Platform) -> None:
    import torch

    first, _ = _predictor(srv_platform, max_batch=8)
    first.warm()
    other, timed = _predictor(srv_platform, max_batch=4)
    other.warm()
    assert len(timed.sizes) > 5 and set(other.tuning) == {1, 2, 4}
    assert len(_kept(srv_platform)) == 2
    fields = {"weights": first.version.weights_digest, "max_batch": 8}
    threads = torch.get_num_threads()
    try:
        one = tuning.key_of(tuning.identity(fields))
        torch.set_num_threads(threads + 1)
        assert tuning.key_of(tuning.identity(fields)) != one
    finally:
        torch.set_num_threads(threads)


def test_a_damaged_or_old_measurement_is_taken_again(srv_platform: Platform) -> None:
    first, _ = _predictor(srv_platform)
    first.warm()
    [kept] = _kept(srv_platform)
    for damage in ("{not json", json.dumps({"chunk": 64, "tuning": {"64": 1.0}}), json.dumps({"chunk": 4})):
        kept.write_text(damage)
        again, timed = _predictor(srv_platform)
        again.warm()
        assert len(timed.sizes) > 10, damage
        assert json.loads(kept.read_text())["chunk"] == again.chunk  # written anew, whole
    old = time.time() - tuning.MAX_AGE_S - 60
    os.utime(kept, (old, old))
    stale, timed = _predictor(srv_platform)
    stale.warm()
    assert len(timed.sizes) > 10
    assert kept.stat().st_mtime > old + 60
    assert not list(kept.parent.glob(".*.tmp"))


def test_workers_warming_together_measure_once(srv_platform: Platform) -> None:
    predictors = [_predictor(srv_platform, b=0.004) for _ in range(3)]
    errors: list[BaseException] = []

    def warm(p: Predictor) -> None:
        try:
            p.warm()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=warm, args=(p,)) for p, _ in predictors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    measured = [m for _, m in predictors if len(m.sizes) > 2]
    assert len(measured) == 1, [m.sizes for _, m in predictors]  # the others waited, then read it
    chunk = predictors[0][0].chunk
    assert all(m.sizes == [1, chunk] for _, m in predictors if m not in measured)  # and warmed a full pass
    assert len({p.chunk for p, _ in predictors}) == 1
    assert len({json.dumps(p.tuning, sort_keys=True) for p, _ in predictors}) == 1


def test_a_folder_that_cannot_be_used_measures_without_sharing(srv_platform: Platform, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    predictor, timed = _predictor(srv_platform)
    predictor.tuning_dir = blocker / "serving"
    with caplog.at_level(logging.WARNING, logger="medcycle.serving.tuning"):
        predictor.warm()
    assert len(timed.sizes) > 10 and predictor.chunk == 8
    assert "without sharing it" in caplog.text
