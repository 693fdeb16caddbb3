"""Pseudo-labels: a model's predictions stored as annotations by ``model:<version>`` (stage model), then reviewed
like any reader's — by a senior through the adjudication queue, or by readers with agreement and adjudication."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from medcycle.auth.roles import Principal, Role
from medcycle.errors import PermissionDenied, UsageError, ValidationFailed
from medcycle.labels import access, adjudication, pseudo, readers, sets, store, tasks
from medcycle.labels.model import Annotation, Kind, Mask
from medcycle.platform import Platform
from tests.labels.task_helpers import CLASS_SCHEMA, MASK_SCHEMA, add_schema, qualify, small_catalog
from tests.training.conftest import demo, loaded, run_options  # noqa: F401 - fixtures


def test_probabilities_become_annotations_with_the_models_confidence() -> None:
    p = np.zeros((3, 4, 4))
    p[0] = 0.9
    p[1] = 0.1
    p[:, 0, :2] = [[0.1], [0.7], [0.2]]  # two voxels of class 1 ("lesion")
    anns = pseudo.mask_annotations("i", p, ["lesion", "cyst"], spacing=(0.5, 0.5))
    assert [a.label for a in anns] == ["lesion"]  # no voxel is most likely "cyst"
    mask = anns[0].geometry
    assert isinstance(mask, Mask) and mask.spacing == (0.5, 0.5) and int(mask.binary.sum()) == 2
    assert anns[0].score == pytest.approx(0.7) and anns[0].kind == Kind.MASK
    assert pseudo.mask_annotations("i", p, ["lesion", "cyst"], min_voxels=3) == []
    with pytest.raises(ValidationFailed, match="do not fit 1 class"):
        pseudo.mask_annotations("i", p, ["lesion"])
    top = pseudo.class_annotations("i", [0.2, 0.7, 0.1], ["normal", "pneumonia", "effusion"])
    assert [(a.label, a.score) for a in top] == [("pneumonia", 0.7)]
    multi = pseudo.class_annotations("i", [0.6, 0.7, 0.1], ["a", "b", "c"], multi_label=True)
    assert [a.label for a in multi] == ["a", "b"]
    with pytest.raises(ValidationFailed, match="3 probabilities for 2 classes"):
        pseudo.class_annotations("i", [0.2, 0.7, 0.1], ["a", "b"])


def chest_predictor(uids: Sequence[str], calls: list[list[str]]) -> pseudo.Predictor:
    """A classifier stand-in: the k-th uid gets class k % 3 with confidence 0.4 + 0.1 k (capped)."""
    classes = ["normal", "pneumonia", "effusion"]
    index = {u: k for k, u in enumerate(uids)}

    def predict(items: Sequence[str]) -> Mapping[str, Sequence[Annotation]]:
        calls.append(list(items))
        return {i: [Annotation(i, classes[index[i] % 3], Kind.CLASS, score=min(0.95, 0.4 + 0.1 * index[i]))]
                for i in items}

    return predict


def test_pseudo_labels_are_annotations_of_the_model_reader(platform: Platform) -> None:
    uids = small_catalog(platform, patients=2, per_series=3)  # 6 instances
    add_schema(platform, CLASS_SCHEMA)
    calls: list[list[str]] = []
    with platform.session() as s:
        got = pseudo.pseudo_label(s, platform.objects, uids, chest_predictor(uids, calls), model_version="cxr@3",
                                  schema="chest", batch=4, actor="lead")
        assert [len(c) for c in calls] == [4, 2]
        assert got.reader == "model:cxr@3" and got.items == tuple(uids) and got.schema == "chest@1"
        recs = [r for rs in got.annotations.values() for r in rs]
        assert len(recs) == 6 and {r.stage for r in recs} == {store.Stage.MODEL}
        assert {(r.reader, r.tool) for r in recs} == {("model:cxr@3", "model:cxr@3")}
        assert all(r.score is not None and r.task_id is None for r in recs)
        info = readers.get_reader(s, "model:cxr@3")
        assert not info.qualified and "model" in str(info.note)
        again = pseudo.pseudo_label(s, platform.objects, uids, chest_predictor(uids, calls), model_version="cxr@3",
                                    schema="chest", actor="lead")
        assert [r.id for rs in again.annotations.values() for r in rs] == [r.id for r in recs]  # nothing twice
        confident = pseudo.store_pseudo_labels(s, platform.objects, chest_predictor(uids, [])(uids),
                                               model_version="cxr@4", schema="chest", min_score=0.6)
        assert confident.dropped == 2 and sum(1 for v in confident.annotations.values() if not v) == 2
        assert confident.to_dict()["with_findings"] == 4
        with pytest.raises(ValidationFailed, match="not a class of chest@1"):
            pseudo.store_pseudo_labels(s, platform.objects, {uids[0]: [Annotation(uids[0], "cat", Kind.CLASS)]},
                                       model_version="x", schema="chest")
        with pytest.raises(ValidationFailed, match="not asked about"):
            pseudo.pseudo_label(s, platform.objects, uids[:1], lambda items: {"other": []}, model_version="x",
                                schema="chest")
        with pytest.raises(UsageError, match="not a valid reader name"):
            pseudo.store_pseudo_labels(s, platform.objects, {}, items=uids, model_version="bad version",
                                       schema="chest")


def test_a_senior_reviews_every_pseudo_label_through_the_adjudication_queue(platform: Platform) -> None:
    uids = small_catalog(platform, patients=1, per_series=3)
    add_schema(platform, MASK_SCHEMA)
    qualify(platform, "sue", senior=True)
    qualify(platform, "ann")
    lesion = np.zeros((8, 8), np.uint8)
    lesion[2:5, 2:5] = 1
    found = {uids[0]: [Annotation(uids[0], "lesion", Kind.MASK, Mask(lesion), score=0.9)],
             uids[1]: [Annotation(uids[1], "lesion", Kind.MASK, Mask(np.roll(lesion, 2)), score=0.55)]}
    with platform.session() as s:  # uids[2]: the model found nothing
        labels = pseudo.store_pseudo_labels(s, platform.objects, found, items=uids, model_version="seg@1",
                                            schema="lesions")
        task = pseudo.send_to_review(s, platform.objects, labels, actor="lead")
        assert task.readers == ("model:seg@1",) and task.item_states["adjudication"] == 3
        assert "pseudo-labels of model:seg@1" in task.origin
        queue = adjudication.adjudication_queue(s, task=task.ref)
        assert [(q.item, q.agreement) for q in queue] == [(uids[1], 0.55), (uids[0], 0.9), (uids[2], 1.0)]
        assert queue[0].readers == ("model:seg@1",) and queue[0].metric == pseudo.REVIEW_METRIC
        sue = Principal("sue", Role.ANNOTATOR)  # a senior sees the model's reading, as any reader's
        seen = access.visible_annotations(s, sue, tasks.get_task_row(s, task.ref), uids[1])
        assert [(a.reader, a.stage) for a in seen] == [("model:seg@1", store.Stage.READ)]
        with pytest.raises(PermissionDenied, match="not a senior"):
            adjudication.adjudicate(s, platform.objects, task.ref, uids[0], senior="ann", choose_reader="model:seg@1")
        adjudication.adjudicate(s, platform.objects, task.ref, uids[0], senior="sue", choose_reader="model:seg@1")
        fixed = Annotation(uids[1], "lesion", Kind.MASK, Mask(lesion))
        adjudication.adjudicate(s, platform.objects, task.ref, uids[1], senior="sue", annotations=[fixed],
                                note="shifted")
        adjudication.adjudicate(s, platform.objects, task.ref, uids[2], senior="sue", annotations=[])
        made = sets.label_set_from_task(s, platform.objects, task.ref, actor="lead")
        resolved = sets.resolve_label_set(s, platform.objects, made.id)
        assert resolved.items == tuple(sorted(uids)) and len(resolved.annotations) == 2
        masks = {a.image: a.geometry for a in resolved.annotations}
        assert isinstance(masks[uids[0]], Mask) and np.array_equal(masks[uids[0]].array, lesion)
        assert isinstance(masks[uids[1]], Mask) and np.array_equal(masks[uids[1]].array, lesion)  # the correction
        with pytest.raises(UsageError, match="takes no threshold"):
            pseudo.send_to_review(s, platform.objects, labels, adjudication_threshold=0.5)


def test_readers_check_pseudo_labels_and_disagreements_go_to_a_senior(platform: Platform) -> None:
    uids = small_catalog(platform, patients=2, per_series=2)  # 4 instances
    add_schema(platform, CLASS_SCHEMA)
    qualify(platform, "ann", "bob")
    with platform.session() as s:
        labels = pseudo.pseudo_label(s, platform.objects, uids, chest_predictor(uids, []), model_version="cxr@3",
                                     schema="chest")
        task = pseudo.send_to_review(s, platform.objects, labels, mode="readers", readers_per_item=1,
                                     adjudication_threshold=0.5, seed=1, actor="lead")
        assert set(task.readers) == {"ann", "bob", "model:cxr@3"} and task.readers_per_item == 2
        model_said = {u: store.load(platform.objects, labels.annotations[u][0]).label for u in uids}
        with pytest.raises(UsageError, match="not qualified"):
            pseudo.send_to_review(s, platform.objects, labels, mode="readers", reviewers=["cal"])
        with pytest.raises(UsageError, match="not a review mode"):
            pseudo.send_to_review(s, platform.objects, labels, mode="robots")
    states = {}
    for reader in ("ann", "bob"):
        with platform.session() as s:
            queue = tasks.reader_queue(s, reader, task=task.ref)
            row = tasks.get_task_row(s, task.ref)
            me = Principal(reader, Role.ANNOTATOR)
            for e in queue:  # blinded: the reader cannot see what the model said
                with pytest.raises(access.LabelsHidden):
                    access.visible_annotations(s, me, row, e.item, reader="model:cxr@3")
        for k, e in enumerate(queue):
            label = model_said[e.item] if k == 0 else "normal" if model_said[e.item] != "normal" else "effusion"
            with platform.session() as s:
                result = tasks.submit(s, platform.objects, task.ref, e.item, reader,
                                      [Annotation(e.item, label, Kind.CLASS)])
                states[e.item] = (k == 0, result.item_state)
    assert {agreed: state for agreed, state in states.values()} == {
        True: tasks.ItemState.COMPLETE, False: tasks.ItemState.ADJUDICATION}
    with platform.session() as s:
        waiting = adjudication.adjudication_queue(s, task=task.ref)
        assert {w.item for w in waiting} == {i for i, (agreed, _) in states.items() if not agreed}
        assert all("model:cxr@3" in w.readers for w in waiting)


# -- a registered model, wired by the CLI ---------------------------------------------------------------------
DEMO_SCHEMA = """\
name: demo
level: instance
classes: [lesion, normal]
"""


def test_a_registered_model_scores_batches_and_pseudo_labels_through_the_cli(
        sqlite_platform: Platform, loaded: dict[str, str], run_options: dict[str, object],  # noqa: F811 - fixtures
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import os

    from medcycle.cli.errors import run
    from medcycle.models import registry
    from medcycle.training.config import example, validate
    from medcycle.training.trainers import train_version
    from tests.labels.test_cli import make_app

    platform = sqlite_platform
    data = example("classification-2d", loaded["demo-xr"])
    data["training"] = {**data["training"], "threads": 1, "epochs": 1, "early_stopping": None}
    data["model"] = {"name": "tiny-cnn", "width": 8, "depth": 2, "dropout": 0.2}
    data["input"] = {**data["input"], "size": [32, 32]}
    result = train_version(platform, validate(data), dataset=loaded["demo-xr"], run_options=run_options)
    with platform.session() as s:
        model = registry.register(s, platform.objects, "nodules", run_id=result.run_id).ref
    add_schema(platform, DEMO_SCHEMA)
    qualify(platform, "ann")
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(platform.settings.home))
    if platform.settings.database_url:
        monkeypatch.setenv("MEDCYCLE_DATABASE_URL", platform.settings.database_url)

    def cli(*args: str) -> dict[str, object]:
        code = run(make_app(), ["labels", *args, "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        parsed: dict[str, object] = json.loads(out.out)
        return parsed

    batch = cli("active", "next", "--schema", "demo", "--dataset", loaded["demo-xr"], "--model", model,
                "--strategy", "mc-dropout", "--mc-samples", "3", "--size", "5")
    assert batch["model_version"] == model and len(batch["items"]) == 5  # type: ignore[arg-type]
    assert batch["scored"] == batch["candidates"] and batch["measure"] == "mc-dropout:bald:t=3"
    again = cli("active", "next", "--schema", "demo", "--dataset", loaded["demo-xr"], "--model", model,
                "--strategy", "mc-dropout", "--mc-samples", "3", "--size", "5")
    assert again["scored"] == 0 and again["items"] == batch["items"]  # cached for this model version
    tta = cli("active", "next", "--schema", "demo", "--dataset", loaded["demo-xr"], "--model", model,
              "--strategy", "tta", "--size", "3")
    assert len(tta["items"]) == 3  # type: ignore[arg-type]
    task = cli("active", "task", str(batch["ref"]), "--schema", "demo")
    assert task["items"] == 5 and task["readers"] == ["ann"]
    listed = run(make_app(), ["labels", "active", "list"])
    assert listed == 0 and "B-1" in capsys.readouterr().out
    first = sorted(batch["items"])[:4]  # type: ignore[call-overload]
    labelled = cli("pseudo", "run", "--schema", "demo", "--model", model, "--query",
                   " or ".join(f'instance == "{u}"' for u in first), "--review", "senior")
    assert labelled["items"] == 4 and labelled["annotations"] == 4  # one class label per radiograph
    review = labelled["task"]
    assert isinstance(review, dict) and review["item_states"]["adjudication"] == 4
    assert review["readers"] == [f"model:{model}"]
