"""Labeling tasks: balanced seeded assignment to qualified readers, queues, submission, progress, automatic
adjudication, label sets from tasks, and a label-only dataset version that moves no image bytes."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy.exc
from sqlalchemy import insert

from medcycle.datasets import items as dataset_items
from medcycle.datasets import labels as dataset_label_sets
from medcycle.datasets import transfer, versions
from medcycle.errors import Conflict, NotFound, PermissionDenied, UsageError, ValidationFailed
from medcycle.labels import adjudication, sets, store, tasks
from medcycle.labels.assign import balanced_assignment, queue_order
from medcycle.labels.item_agreement import item_agreement
from medcycle.labels.model import Annotation, Box, Kind, Mask, Polygon
from medcycle.labels.tables import AssignmentRow
from medcycle.platform import Platform
from medcycle.store.base import utcnow
from tests.datasets.conftest import Catalog, catalog, frozen, use_remote  # noqa: F401 - fixtures
from tests.labels.task_helpers import BOX_SCHEMA, CLASS_SCHEMA, MASK_SCHEMA, add_schema, qualify, small_catalog


# -- assignment (no database) -------------------------------------------------------------------------
@pytest.mark.parametrize(("n_items", "n_readers", "per_item"), [(10, 3, 1), (37, 4, 2), (50, 5, 3), (7, 7, 7),
                                                                (1, 3, 2), (100, 6, 2)])
def test_assignment_is_balanced_distinct_and_seeded(n_items: int, n_readers: int, per_item: int) -> None:
    items = [f"item-{i:03d}" for i in range(n_items)]
    pool = [f"r{j}" for j in range(n_readers)]
    for seed in range(5):
        got = balanced_assignment(items, pool, per_item, seed=seed)
        assert set(got) == set(items)
        assert all(len(rs) == per_item == len(set(rs)) and set(rs) <= set(pool) for rs in got.values())
        load = Counter(r for rs in got.values() for r in rs)
        counts = [load.get(r, 0) for r in pool]
        assert max(counts) - min(counts) <= 1, (seed, counts)
        assert got == balanced_assignment(items, list(reversed(pool)), per_item, seed=seed)  # order of the pool
        order = queue_order(got, seed=seed)
        for r in pool:
            positions = sorted(p for (i, rr), p in order.items() if rr == r)
            assert positions == list(range(load.get(r, 0)))
    if n_items >= 30 and per_item >= 2:  # every pair of readers shares items: reader x reader matrices work
        got = balanced_assignment(items, pool, per_item, seed=1)
        shared = Counter(tuple(sorted(p)) for rs in got.values() for p in itertools.combinations(rs, 2))
        assert all(shared[pair] > 0 for pair in itertools.combinations(sorted(pool), 2)), shared
        assert got != balanced_assignment(items, pool, per_item, seed=2)


def test_assignment_refuses_impossible_requests() -> None:
    with pytest.raises(UsageError, match="at least 3 qualified readers"):
        balanced_assignment(["a"], ["r1", "r2"], 3)
    with pytest.raises(UsageError, match="at least 1"):
        balanced_assignment(["a"], ["r1"], 0)
    with pytest.raises(UsageError, match="listed twice"):
        balanced_assignment(["a"], ["r1", "r1"], 1)


# -- per-item agreement (no database) -----------------------------------------------------------------
def test_item_agreement_per_kind() -> None:
    cls = {"a": [Annotation("i", "normal", Kind.CLASS)], "b": [Annotation("i", "normal", Kind.CLASS)],
           "c": [Annotation("i", "pneumonia", Kind.CLASS)]}
    got = item_agreement(cls, [Kind.CLASS])
    assert got is not None and got.value == pytest.approx(1 / 3) and got.metric == "class-jaccard"
    assert got.by_reader["a"] == pytest.approx(0.5) and got.by_reader["c"] == 0.0
    assert item_agreement({"a": []}, [Kind.CLASS]) is None
    box = {"a": [Annotation("i", "nodule", Kind.BOX, Box(0, 0, 10, 10))],
           "b": [Annotation("i", "nodule", Kind.BOX, Box(1, 1, 10, 10))], "c": []}
    got = item_agreement(box, [Kind.BOX])
    assert got is not None and got.value == pytest.approx(1 / 3)  # a~b match (IoU .81); c found nothing
    assert item_agreement({"a": [], "b": []}, [Kind.BOX]).value == 1.0  # type: ignore[union-attr]
    poly = {"a": [Annotation("i", "x", Kind.POLYGON, Polygon(((0, 0), (10, 0), (10, 10), (0, 10))))],
            "b": [Annotation("i", "x", Kind.POLYGON, Polygon(((0, 0), (10, 0), (10, 9), (0, 9))))]}
    assert item_agreement(poly, [Kind.POLYGON]).value == 1.0  # type: ignore[union-attr]
    m1, m2 = np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)
    m1[0:4, 0:5], m2[0:4, 0:10] = 1, 1  # Dice = 2*20 / (20 + 40)
    masks = {"a": [Annotation("i", "lesion", Kind.MASK, Mask(m1))],
             "b": [Annotation("i", "lesion", Kind.MASK, Mask(m2))]}
    assert item_agreement(masks, [Kind.MASK]).value == pytest.approx(2 / 3)  # type: ignore[union-attr]
    other_grid = {"a": masks["a"], "b": [Annotation("i", "lesion", Kind.MASK, Mask(np.ones((5, 5), np.uint8)))]}
    assert item_agreement(other_grid, [Kind.MASK]).value == 0.0  # type: ignore[union-attr]
    mixed = {"a": [*cls["a"], *box["a"]], "b": [*cls["b"]]}
    got = item_agreement(mixed, [Kind.CLASS, Kind.BOX])
    assert got is not None and got.value == 0.0 and got.metric == "min(box-f1@0.5,class-jaccard)"


# -- tasks --------------------------------------------------------------------------------------------
def test_task_from_query_assigns_only_qualified_readers(platform: Platform) -> None:
    p = platform
    uids = small_catalog(p, patients=5, per_series=3)  # 15 instances
    add_schema(p, CLASS_SCHEMA)
    qualify(p, "ann", "bob", "cat")
    qualify(p, "dan", qualified=False)
    with p.session() as s:
        items = tasks.items_from_query(s, 'modality != "none"', "instance")
        assert items.uids == tuple(uids) and items.origin == 'query modality != "none"'
        with pytest.raises(NotFound, match="not registered: eve"):
            tasks.create_task(s, items, schema="chest", readers=["ann", "eve"])
        with pytest.raises(UsageError, match="at least 4 qualified"):
            tasks.create_task(s, items, schema="chest", readers_per_item=4)
        with pytest.raises(UsageError, match="at least 2 readers per item"):
            tasks.create_task(s, items, schema="chest", adjudication_threshold=0.5)
        with pytest.raises(UsageError, match="between 0 and 1"):
            tasks.create_task(s, items, schema="chest", readers_per_item=2, adjudication_threshold=1.5)
        with pytest.raises(NotFound, match="label schema"):
            tasks.create_task(s, items, schema="nope")
        info = tasks.create_task(s, items, schema="chest@1", readers_per_item=2, readers=["ann", "bob", "cat", "dan"],
                                 due="2030-01-31", seed=7, name="round 1", actor="lead")
    assert info.warnings == ("reader dan is not qualified and was left out of the assignment",)
    assert (info.ref, info.readers, info.items, info.schema) == ("T-1", ("ann", "bob", "cat"), 15, "chest@1")
    assert info.due_at is not None and info.due_at.isoformat() == "2030-01-31T23:59:59+00:00" and not info.overdue
    loads = {r.reader: r.assigned for r in info.readers_progress}
    assert loads == {"ann": 10, "bob": 10, "cat": 10}  # 15 items x 2 readers, balanced
    with p.session() as s:
        mine = tasks.assignments_of(s, info.id)
        assert set(mine) == {"ann", "bob", "cat"} and all(len(set(v)) == len(v) for v in mine.values())
        # the database refuses a second copy of an item for a reader, whatever the caller does
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            s.execute(insert(AssignmentRow), [{"task_id": info.id, "item_uid": mine["ann"][0], "reader": "ann",
                                               "position": 99, "state": "assigned", "assigned_at": utcnow()}])
    with p.session() as s:  # the same seed gives the same assignment
        again = tasks.create_task(s, items, schema="chest", readers_per_item=2, readers=["ann", "bob", "cat"], seed=7)
        assert tasks.assignments_of(s, again.id) == mine
        assert [t.ref for t in tasks.list_tasks(s)] == ["T-2", "T-1"]
        assert [t.ref for t in tasks.list_tasks(s, reader="dan")] == []
        with pytest.raises(UsageError, match="query is empty"):
            tasks.items_from_query(s, " ", "instance")
        with pytest.raises(UsageError, match="not a task reference"):
            tasks.get_task(s, "task-one")


def test_task_from_a_dataset_version_at_series_level(
    platform: Platform, catalog: Catalog, frozen: str,  # noqa: F811 - imported fixtures
) -> None:
    p = platform
    add_schema(p, "name: series-quality\nlevel: series\nclasses: [good, poor]\n")
    qualify(p, "ann", "bob")
    with p.session() as s:
        version = versions.resolve(s, frozen)
        resolver_calls: list[str] = []

        def resolver(session: object, ref: str) -> tuple[list[str], str]:
            resolver_calls.append(ref)
            row = versions.resolve(s, ref)
            return sorted(versions.item_states(s, row.id)), row.id

        with pytest.raises(UsageError, match="one of them"):
            tasks.task_items(s, schema="series-quality", dataset=frozen, query="modality == 'CT'")
        items = tasks.task_items(s, schema="series-quality", dataset=frozen, dataset_resolver=resolver)
        info = tasks.create_task(s, items, schema="series-quality", readers_per_item=1)
    assert resolver_calls == [frozen]
    assert (info.origin, info.origin_digest, info.level.value) == (f"dataset {frozen}", version.id, "series")
    assert info.items == 48  # 96 instances in 48 series
    assert sorted(r.assigned for r in info.readers_progress) == [24, 24]


def test_queue_submit_progress_and_due_dates(platform: Platform) -> None:
    p = platform
    small_catalog(p, patients=2, per_series=2)  # 4 instances
    add_schema(p, CLASS_SCHEMA)
    qualify(p, "ann", "bob")
    with p.session() as s:
        items = tasks.items_from_query(s, 'modality != "none"', "instance")
        t = tasks.create_task(s, items, schema="chest", readers_per_item=1, due=utcnow() - timedelta(days=1))
    assert t.overdue and t.to_dict()["overdue"] is True
    with p.session() as s:
        queue = tasks.reader_queue(s, "ann")
        assert len(queue) == 2 and [e.position for e in queue] == [0, 1] and queue[0].schema == "chest@1"
        first = queue[0].item
        bobs = tasks.reader_queue(s, "bob")[0].item
        with pytest.raises(NotFound, match=r"no item .* assigned to ann"):
            tasks.submit(s, p.objects, t.ref, bobs, "ann", [Annotation(bobs, "normal", Kind.CLASS)])
        with pytest.raises(ValidationFailed, match="not a class of chest@1"):
            tasks.submit(s, p.objects, t.ref, first, "ann", [Annotation(first, "fracture", Kind.CLASS)])
        with pytest.raises(ValidationFailed, match="allows one per item"):
            tasks.submit(s, p.objects, t.ref, first, "ann", [Annotation(first, "normal", Kind.CLASS),
                                                              Annotation(first, "effusion", Kind.CLASS)])
        with pytest.raises(ValidationFailed, match="no class label"):
            tasks.submit(s, p.objects, t.ref, first, "ann", [])
        done = tasks.submit(s, p.objects, t.ref, first, "ann", [Annotation(first, "pneumonia", Kind.CLASS)],
                            seconds=12.5, tool="viewer 1.2")
    assert done.item_state is tasks.ItemState.COMPLETE and done.agreement is None  # one reader: nothing to compare
    with p.session() as s:
        with pytest.raises(Conflict, match="already submitted"):
            tasks.submit(s, p.objects, t.ref, first, "ann", [Annotation(first, "normal", Kind.CLASS)])
        assert [e.item for e in tasks.reader_queue(s, "ann")] == [queue[1].item]
        info = tasks.get_task(s, t.ref)
        ann = next(r for r in info.readers_progress if r.reader == "ann")
        assert (ann.assigned, ann.submitted, ann.remaining, ann.seconds) == (2, 1, 1, 12.5)
        assert (info.done, info.item_states["complete"], info.item_states["open"]) == (1, 1, 3)
        stored = store.find(s, task_id=t.id, item=first)
        assert [(a.reader, a.label, a.seconds, a.tool) for a in stored] == [("ann", "pneumonia", 12.5, "viewer 1.2")]
        tasks.close_task(s, t.ref)
        assert tasks.reader_queue(s, "ann") == []
        with pytest.raises(Conflict, match="closed"):
            tasks.submit(s, p.objects, t.ref, queue[1].item, "ann", [Annotation(queue[1].item, "normal", Kind.CLASS)])
        assert not tasks.get_task(s, t.ref).overdue  # closed tasks are not overdue


def test_disagreement_goes_to_adjudication_and_a_senior_resolves_it(platform: Platform) -> None:
    p = platform
    small_catalog(p, patients=2, per_series=2)  # 4 instances
    add_schema(p, CLASS_SCHEMA)
    qualify(p, "ann", "bob")
    qualify(p, "sue", "sam", senior=True, qualified=False)
    with p.session() as s:
        items = tasks.items_from_query(s, 'modality != "none"', "instance")
        t = tasks.create_task(s, items, schema="chest", readers_per_item=2, adjudication_threshold=0.99)
    uids = list(items.uids)
    with p.session() as s:
        for i, uid in enumerate(uids):  # ann and bob disagree on the first two items
            for reader in ("ann", "bob"):
                label = "pneumonia" if reader == "bob" and i < 2 else "normal"
                result = tasks.submit(s, p.objects, t.ref, uid, reader, [Annotation(uid, label, Kind.CLASS)])
            assert result.item_state is (tasks.ItemState.ADJUDICATION if i < 2 else tasks.ItemState.COMPLETE)
            assert result.agreement == (0.0 if i < 2 else 1.0) and result.metric == "class-jaccard"
    with p.session() as s:
        queue = adjudication.adjudication_queue(s, task=t.ref)
        assert [(q.item, q.agreement, q.threshold, q.readers) for q in queue] == [
            (u, 0.0, 0.99, ("ann", "bob")) for u in sorted(uids[:2])]
        with pytest.raises(Conflict, match="2 unfinished item"):
            sets.label_set_from_task(s, p.objects, t.ref)
        partial = sets.label_set_from_task(s, p.objects, t.ref, partial=True)
        assert (partial.items, partial.origin) == (2, f"task {t.ref} (partial)")
        with pytest.raises(PermissionDenied, match="not a senior"):
            adjudication.adjudicate(s, p.objects, t.ref, uids[0], senior="ann", choose_reader="bob")
    qualify(p, "ann", senior=True)  # now a senior, but she read the item
    with p.session() as s:
        with pytest.raises(PermissionDenied, match="read this item"):
            adjudication.adjudicate(s, p.objects, t.ref, uids[0], senior="ann", choose_reader="bob")
        with pytest.raises(UsageError, match="not both"):
            adjudication.adjudicate(s, p.objects, t.ref, uids[0], senior="sue")
        with pytest.raises(UsageError, match="did not read"):
            adjudication.adjudicate(s, p.objects, t.ref, uids[0], senior="sue", choose_reader="sam")
        chose = adjudication.adjudicate(s, p.objects, t.ref, uids[0], senior="sue", choose_reader="bob",
                                        note="consolidation visible")
        own = adjudication.adjudicate(s, p.objects, t.ref, uids[1], senior="sam",
                                      annotations=[Annotation(uids[1], "effusion", Kind.CLASS)])
        with pytest.raises(Conflict, match="already resolved by sue"):
            adjudication.adjudicate(s, p.objects, t.ref, uids[0], senior="sam", choose_reader="ann")
        with pytest.raises(NotFound, match="no adjudication"):
            adjudication.adjudicate(s, p.objects, t.ref, uids[2], senior="sam", choose_reader="ann")
    assert (chose.state, chose.decision, chose.resolved_by, chose.note) == ("resolved", "reader:bob", "sue",
                                                                            "consolidation visible")
    assert own.decision == "new" and len(own.annotation_ids) == 1
    with p.session() as s:
        assert adjudication.adjudication_queue(s) == []
        assert len(adjudication.adjudication_queue(s, state="resolved")) == 2
        sam = store.find(s, task_id=t.id, item=uids[1], reader="sam")
        assert [(a.label, a.stage.value) for a in sam] == [("effusion", "adjudication")]
        info = tasks.get_task(s, t.ref)
        assert info.item_states == {"open": 0, "complete": 2, "adjudication": 0, "resolved": 2} and info.done == 4
        full = sets.label_set_from_task(s, p.objects, t.ref)
        labels = dict(sets.dataset_labels(s, p.objects, full.id).pairs)
    assert labels == {uids[0]: "pneumonia", uids[1]: "effusion", uids[2]: "normal", uids[3]: "normal"}
    assert full.id != partial.id and full.items == 4


def test_mask_and_box_tasks_score_agreement(platform: Platform, tmp_path: Path) -> None:
    p = platform
    small_catalog(p, patients=1, per_series=2)  # 2 instances
    add_schema(p, MASK_SCHEMA)
    add_schema(p, BOX_SCHEMA)
    qualify(p, "ann", "bob")
    a = np.zeros((16, 16), np.uint8)
    a[2:10, 2:10] = 1
    b = np.zeros((16, 16), np.uint8)
    b[2:10, 6:14] = 1  # Dice 0.5
    with p.session() as s:
        items = tasks.items_from_query(s, 'modality != "none"', "instance")
        masks = tasks.create_task(s, items, schema="lesions", readers_per_item=2, adjudication_threshold=0.8)
        boxes = tasks.create_task(s, items, schema="findings", readers_per_item=2, adjudication_threshold=0.8)
    u0, u1 = items.uids
    with p.session() as s:
        for reader, arr in (("ann", a), ("bob", b)):
            r0 = tasks.submit(s, p.objects, masks.ref, u0, reader,
                              [Annotation(u0, "lesion", Kind.MASK, Mask(arr, spacing=(0.5, 0.5)))], seconds=30)
            r1 = tasks.submit(s, p.objects, masks.ref, u1, reader,
                              [Annotation(u1, "lesion", Kind.MASK, Mask(a, spacing=(0.5, 0.5)))])
        assert (r0.item_state, r0.agreement, r0.metric) == (tasks.ItemState.ADJUDICATION, 0.5, "mask-dice")
        assert (r1.item_state, r1.agreement) == (tasks.ItemState.COMPLETE, 1.0)
        # nothing found by both readers is agreement; a box against nothing is not
        for reader in ("ann", "bob"):
            e0 = tasks.submit(s, p.objects, boxes.ref, u0, reader, [])
            e1 = tasks.submit(s, p.objects, boxes.ref, u1, reader, [Annotation(u1, "normal", Kind.CLASS)] if
                              reader == "ann" else [Annotation(u1, "nodule", Kind.BOX, Box(1, 1, 5, 5))])
        assert (e0.item_state, e0.agreement) == (tasks.ItemState.COMPLETE, 1.0)
        assert (e1.item_state, e1.agreement) == (tasks.ItemState.ADJUDICATION, 0.0)
        stored = store.find(s, task_id=masks.id, item=u0, reader="bob")[0]
        assert stored.mask_digest and stored.geometry and stored.geometry["spacing"] == [0.5, 0.5]
        assert store.load(p.objects, stored).geometry == Mask(b, spacing=(0.5, 0.5))
    qualify(p, "sue", senior=True, qualified=False)
    with p.session() as s:
        adjudication.adjudicate(s, p.objects, masks.ref, u0, senior="sue", choose_reader="ann")
        ms = sets.label_set_from_task(s, p.objects, masks.ref)
        bs = sets.label_set_from_task(s, p.objects, boxes.ref, partial=True)
        resolved = sets.resolve_label_set(s, p.objects, ms.id)
    assert sorted((x.image, int(x.geometry.array.sum())) for x in resolved.annotations  # type: ignore[union-attr]
                  ) == [(u0, 64), (u1, 64)]
    assert (bs.items, bs.annotations) == (1, 0)  # u0: both found nothing — a negative item with no annotation


# -- the dataset side: a label-only change moves no image bytes ---------------------------------------------
def test_a_label_set_feeds_a_new_dataset_version_that_moves_no_image_bytes(
    platform: Platform, catalog: Catalog, frozen: str, tmp_path: Path,  # noqa: F811 - imported fixtures
) -> None:
    p = platform
    add_schema(p, "name: cxr-class\nlevel: instance\nclasses: [normal, pneumonia]\n")
    qualify(p, "ann")
    remote = use_remote(p)
    first = transfer.pull(p, frozen, tmp_path / "pull", workers=2)
    assert first.fetched_objects == 96
    with p.session() as s:
        items = tasks.task_items(s, schema="cxr-class", dataset=frozen, dataset_resolver=lambda session, ref: (
            sorted(versions.item_states(s, versions.resolve(s, ref).id)), versions.resolve(s, ref).id))
        t = tasks.create_task(s, items, schema="cxr-class")
        for e in tasks.reader_queue(s, "ann", limit=1000):
            label = "pneumonia" if e.item.endswith("1") else "normal"
            tasks.submit(s, p.objects, t.ref, e.item, "ann", [Annotation(e.item, label, Kind.CLASS)])
        label_set = sets.label_set_from_task(s, p.objects, t.ref)
        csv_text = sets.dataset_labels(s, p.objects, label_set.id).to_csv()
        assert csv_text.startswith("instance,label\n") and csv_text.count("\n") == 97
        # the integration available today: the CSV import of the datasets layer
        imported = dataset_label_sets.import_labels(s, p.objects, "cxr", csv_text, origin=f"labels set {label_set.id}")
        assert imported.n_targets == 96 and dataset_items.get_dataset(s, "cxr").label_set_id == imported.id
        v2 = versions.freeze(s, p.objects, "cxr", tag="relabelled").version
    remote.opened.clear()
    remote.bytes_read = 0
    second = transfer.pull(p, "cxr@relabelled", tmp_path / "pull")
    assert second.fetched_objects == 0 and second.fetched_bytes == 0 and remote.opened == [v2.id]
    assert second.unchanged == 96
    manifest = versions.load_manifest(p.objects, v2.id)
    assert {i.uid: i.labels for i in manifest.items} == {
        i.uid: ("pneumonia",) if i.uid.endswith("1") else ("normal",) for i in manifest.items}
