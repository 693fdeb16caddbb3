"""Reader qualification: grading against a gold standard, 30-case exams with simulated readers, sittings that
certify and gate assignment, expiry and re-testing, honeypots hidden in live queues, scorecards, migration 0012."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sklearn.metrics import cohen_kappa_score
from sqlalchemy import inspect, select

from medcycle.auth.roles import Principal, Role
from medcycle.errors import Conflict, NotFound, UsageError, ValidationFailed
from medcycle.labels import (
    access,
    certifications,
    exams,
    grading,
    honeypots,
    qualification,
    readers,
    scorecards,
    sets,
    store,
    tasks,
)
from medcycle.labels.model import Annotation, Box, Kind, Mask
from medcycle.labels.tables import AssignmentRow
from medcycle.platform import Platform
from medcycle.store.base import Base, utcnow
from medcycle.store.engine import create_engine_for
from medcycle.store.migrate import alembic_config, current_revision
from medcycle.store.registry import import_all_tables
from tests.labels.task_helpers import CLASS_SCHEMA, MASK_SCHEMA, add_schema, small_catalog
from tests.labels.test_consensus import READERS, ellipse, read_with

SPACING = (0.7, 0.7)
MASK_PASS = {"sensitivity": 0.82, "specificity": 0.965}


def cls(item: str, label: str) -> Annotation:
    return Annotation(item, label, Kind.CLASS)


def lesion(item: str, array: np.ndarray[Any, Any]) -> Annotation:
    return Annotation(item, "lesion", Kind.MASK, Mask(array.astype(np.uint8), SPACING))


# -- grading (no database) -----------------------------------------------------------------------------
def test_a_30_case_exam_flags_every_simulated_reader_below_the_pass_threshold() -> None:
    """Readers with known voxel sensitivity/specificity (as in test_consensus) on a 30-case mask exam."""
    rng = np.random.default_rng(5)
    truths = [ellipse(rng) for _ in range(30)]
    reference = {f"c{i:02d}": [lesion(f"c{i:02d}", t)] for i, t in enumerate(truths)}
    grid = {f"g{a}{b}": (se, sp) for (a, se), (b, sp) in itertools.product(
        enumerate([0.70, 0.78, 0.80, 0.86, 0.90, 0.97]), enumerate([0.94, 0.955, 0.96, 0.975, 0.985, 0.995]))}
    simulated = {**READERS, **grid}
    flagged, covered, intervals = set(), 0, 0
    for name, (se, sp) in simulated.items():
        readings = {f"c{i:02d}": [lesion(f"c{i:02d}", read_with(rng, t, se, sp))] for i, t in enumerate(truths)}
        grade = grading.Grade.pool(grading.grade_readings(reference, readings, kinds=[Kind.MASK]))
        assert grade.items == 30
        assert grade.metrics["sensitivity"] == pytest.approx(se, abs=0.02), name
        assert grade.metrics["specificity"] == pytest.approx(sp, abs=0.005), name
        for metric, truth in (("sensitivity", se), ("specificity", sp)):
            lo, hi = grade.intervals[metric]
            covered += lo <= truth <= hi
            intervals += 1
        if grade.failures(MASK_PASS):
            flagged.add(name)
    below = {n for n, (se, sp) in simulated.items() if se < MASK_PASS["sensitivity"] or sp < MASK_PASS["specificity"]}
    assert flagged == below
    assert {"r4", "r5"} <= flagged and not {"r1", "r2", "r3"} & flagged
    assert covered / intervals >= 0.85  # Wilson 95% intervals cover the true rates


def test_grading_classes_by_hand_and_kappa_equals_sklearn() -> None:
    ref = {"a": [cls("a", "pneumonia")], "b": [cls("b", "normal")], "c": [cls("c", "effusion")],
           "d": [cls("d", "normal")], "e": [cls("e", "pneumonia")], "f": [cls("f", "normal")]}
    got = {"a": [cls("a", "pneumonia")], "b": [cls("b", "pneumonia")], "c": [cls("c", "normal")],
           "d": [cls("d", "normal")], "e": [cls("e", "effusion")]}  # f: left without a label
    items = grading.grade_readings(ref, got, kinds=[Kind.CLASS], negative_labels=["normal"],
                                   seconds={"a": 10.0, "b": 30.0})
    assert [g.reading for g in items] == ["pneumonia", "pneumonia", "normal", "normal", "effusion", grading.NONE]
    grade = grading.Grade.pool(items)
    # positives (finding) in the reference: a, c, e; the reader called a and e positive, missed c
    assert grade.metrics["item_sensitivity"] == pytest.approx(2 / 3)
    assert grade.metrics["sensitivity"] == grade.metrics["item_sensitivity"]  # no masks: item level
    # negatives: b, d, f; the reader called b positive
    assert grade.metrics["item_specificity"] == pytest.approx(2 / 3)
    assert grade.metrics["accuracy"] == pytest.approx(2 / 6)
    expected = cohen_kappa_score([g.reading for g in items], [g.reference for g in items])
    assert grade.metrics["kappa"] == pytest.approx(expected)
    assert grade.metrics["dice"] is None and grade.metrics["box_f1"] is None
    assert grade.seconds_per_item == pytest.approx(20.0)
    assert grade.counts == {"item_tp": 2, "item_fn": 1, "item_fp": 1, "item_tn": 2}
    lo, hi = grade.intervals["item_sensitivity"]
    assert lo < 2 / 3 < hi and hi - lo > 0.5  # three positives say little
    assert grade.failures({"accuracy": 0.3, "kappa": 0.5}) == [f"kappa {expected:.3f} < 0.5"]
    assert grading.Grade.pool([grading.ItemGrade.from_dict(g.to_dict()) for g in items]) == grade
    with pytest.raises(ValidationFailed, match="not in the reference"):
        grading.grade_readings(ref, {"zz": []}, kinds=[Kind.CLASS])


def test_grading_masks_and_boxes_with_empty_items() -> None:
    a = np.zeros((10, 10), np.uint8)
    a[2:6, 2:6] = 1  # 16 voxels
    b = np.zeros((10, 10), np.uint8)
    b[2:6, 2:4] = 1  # 8 of them
    ref = {"x": [lesion("x", a)], "empty": [], "y": [lesion("y", a)]}
    got = {"x": [lesion("x", b)], "empty": [lesion("empty", np.zeros((10, 10)))], "y": []}
    items = grading.grade_readings(ref, got, kinds=[Kind.MASK])
    by = {g.item: g for g in items}
    assert by["empty"].dice == 1.0 and by["empty"].reading == grading.NONE  # an all-zero mask is nothing drawn
    assert by["empty"].voxels == (0, 0, 0, 100)  # ... but it tells the image size: 100 true negatives
    assert by["x"].dice == pytest.approx(2 * 8 / 24) and by["x"].voxels == (8, 8, 0, 84)
    assert by["y"].dice == 0.0 and by["y"].voxels == (0, 16, 0, 84)
    grade = grading.Grade.pool(items)
    assert grade.metrics["sensitivity"] == pytest.approx(8 / 32)
    assert grade.metrics["specificity"] == 1.0
    assert grade.metrics["dice"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert grade.metrics["item_sensitivity"] == pytest.approx(1 / 2)
    boxes = {"p": [Annotation("p", "nodule", Kind.BOX, Box(0, 0, 10, 10))], "q": []}
    found = {"p": [Annotation("p", "nodule", Kind.BOX, Box(1, 1, 10, 10)),
                   Annotation("p", "nodule", Kind.BOX, Box(20, 20, 30, 30))],
             "q": [Annotation("q", "nodule", Kind.BOX, Box(0, 0, 5, 5))]}
    grade = grading.Grade.pool(grading.grade_readings(boxes, found, kinds=[Kind.BOX]))
    assert grade.counts["box_tp"] == 1 and grade.counts["box_fp"] == 2 and grade.counts["box_fn"] == 0
    assert grade.metrics["box_f1"] == pytest.approx(2 / 4)
    assert grade.metrics["item_specificity"] == 0.0  # q has no nodule; a box was drawn there


def test_pass_thresholds_are_checked_against_what_the_schema_can_measure() -> None:
    assert grading.check_thresholds({"dice": 0.8, "sensitivity": 0.9}, [Kind.MASK], []) == {
        "dice": 0.8, "sensitivity": 0.9}
    with pytest.raises(ValidationFailed, match="need --negative"):
        grading.check_thresholds({"sensitivity": 0.9}, [Kind.CLASS], [])
    assert grading.check_thresholds({"sensitivity": 0.9}, [Kind.CLASS], ["normal"]) == {"sensitivity": 0.9}
    with pytest.raises(ValidationFailed, match="cannot be a pass threshold"):
        grading.check_thresholds({"dice": 0.8}, [Kind.BOX], [])
    with pytest.raises(ValidationFailed, match="between 0 and 1"):
        grading.check_thresholds({"accuracy": 1.5}, [Kind.CLASS], [])
    assert grading.check_thresholds({"kappa": -0.2}, [Kind.CLASS], []) == {"kappa": -0.2}
    with pytest.raises(ValidationFailed, match="at least one pass threshold"):
        grading.check_thresholds({}, [Kind.CLASS], [])
    assert exams.parse_thresholds(["accuracy=0.9", "kappa = 0.6"]) == {"accuracy": 0.9, "kappa": 0.6}
    with pytest.raises(UsageError, match="METRIC=VALUE"):
        exams.parse_thresholds(["accuracy"])


# -- gold sets, sittings, certification (database) -----------------------------------------------------
def gold_set(platform: Platform, schema: str, answers: dict[str, list[Annotation]], items: list[str]) -> str:
    with platform.session() as s:
        ids = [r.id for item, anns in answers.items() if anns
               for r in store.save(s, platform.objects, anns, item=item, level="instance", reader="expert",
                                   stage=store.Stage.IMPORT)]
        return sets.create_label_set(s, platform.objects, ids, schema=schema, items=items, origin="gold").id


def sit(platform: Platform, attempt: qualification.AttemptInfo, answer: dict[str, list[Annotation]],
        seconds: float = 20.0) -> None:
    """The reader reads their queue and submits each item; the submission hook runs as the interfaces will."""
    with platform.session() as s:
        queue = tasks.reader_queue(s, attempt.reader, task=attempt.task)
    assert {e.item for e in queue} == set(answer)
    for entry in queue:
        with platform.session() as s:
            anns = [Annotation(entry.item, a.label, a.kind, a.geometry) for a in answer[entry.item]]
            tasks.submit(s, platform.objects, attempt.task, entry.item, attempt.reader, anns, seconds=seconds)
            qualification.after_submit(s, platform.objects, tasks.parse_ref(attempt.task), entry.item,
                                       attempt.reader)


CHEST = ["normal", "pneumonia", "effusion"]


def chest_answers(uids: list[str]) -> dict[str, list[Annotation]]:
    return {u: [cls(u, CHEST[i % 3])] for i, u in enumerate(uids)}


def wrong(answers: dict[str, list[Annotation]], every: int) -> dict[str, list[Annotation]]:
    """Every ``every``-th answer replaced by the next class."""
    return {u: [cls(u, CHEST[(CHEST.index(a[0].label) + 1) % 3])] if i % every == 0 else a
            for i, (u, a) in enumerate(answers.items())}


def test_a_sitting_certifies_passing_readers_and_only_they_are_assigned(platform: Platform) -> None:
    uids = small_catalog(platform, patients=4, per_series=3)  # 12 instances
    add_schema(platform, CLASS_SCHEMA)
    exam_items, live_items = uids[:6], uids[6:]
    answers = chest_answers(exam_items)
    set_id = gold_set(platform, "chest@1", answers, exam_items)
    with platform.session() as s:
        exam = exams.create_exam(s, "chest-2026", label_set=set_id[:12], negative_labels=["normal"], valid_days=30,
                                 thresholds={"accuracy": 0.8, "item_sensitivity": 0.75}, actor="lead")
        assert exam.items == 6 and exam.schema == "chest@1" and exam.kinds == {Kind.CLASS}
        ann = qualification.start_attempt(s, platform.objects, "chest-2026", "ann", seed=1, actor="lead")
        bob = qualification.start_attempt(s, platform.objects, "chest-2026", "bob", seed=2, actor="lead")
        assert not readers.get_reader(s, "ann").qualified  # registered to sit, not qualified
        with pytest.raises(Conflict, match="already has an open sitting"):
            qualification.start_attempt(s, platform.objects, "chest-2026", "ann", actor="lead")
    assert ann.items == 6 and ann.submitted == 0 and ann.passed is None
    sit(platform, ann, answers)
    sit(platform, bob, wrong(answers, 2))  # half wrong
    with platform.session() as s:
        ann = qualification.get_attempt(s, ann.ref)
        bob = qualification.get_attempt(s, bob.ref)
        assert ann.passed is True and ann.failures == () and ann.grade is not None
        assert ann.grade["metrics"]["accuracy"] == 1.0 and ann.grade["seconds_per_item"] == 20.0
        assert bob.passed is False and any(f.startswith("accuracy 0.500 < 0.8") for f in bob.failures)
        assert tasks.get_task(s, ann.task).state == "closed"
        assert readers.get_reader(s, "ann").qualified and "chest-2026 until" in str(
            readers.get_reader(s, "ann").certification)
        assert not readers.get_reader(s, "bob").qualified
        assert [c.state for c in certifications.certifications(s, exam="chest-2026")] == [
            certifications.CertState.ACTIVE, certifications.CertState.FAILED]
        # certification gates assignment: the failed reader is left out, by default and when named
        live = tasks.TaskItems(tuple(live_items), "query live")
        assert tasks.create_task(s, live, schema="chest", actor="lead").readers == ("ann",)
        named = tasks.create_task(s, live, schema="chest", readers=["ann", "bob"], actor="lead")
        assert named.readers == ("ann",) and "bob is not qualified" in named.warnings[0]
        with pytest.raises(Conflict, match="already passed"):
            qualification.score_attempt(s, platform.objects, ann.ref)
        # re-testing: bob sits again and passes
        again = qualification.start_attempt(s, platform.objects, "chest-2026", "bob", seed=3, actor="lead")
        with pytest.raises(Conflict, match="item\\(s\\) of"):
            qualification.score_attempt(s, platform.objects, again.ref)
    sit(platform, again, answers)
    with platform.session() as s:
        assert qualification.get_attempt(s, again.ref).passed and readers.get_reader(s, "bob").qualified
        assert [a.ref for a in qualification.list_attempts(s, reader="bob")] == [again.ref, bob.ref]
        # a hand-qualified reader (no exam) is not touched by the exam machinery
        readers.set_reader(s, "cal", qualified=True, actor="admin")
        # expiry: after 30 days both certifications lapse; the readers are not assigned until they re-test
        later = utcnow() + timedelta(days=31)
        due = certifications.retest_due(s, within_days=40)
        assert {c.reader for c in due} == {"ann", "bob"}
        report = qualification.refresh(s, platform.objects, now=later, actor="lead")
        assert {c.reader for c in report.expired} == {"ann", "bob"} and report.attempts == ()
        assert not readers.get_reader(s, "ann").qualified and readers.get_reader(s, "ann").certification is None
        assert readers.get_reader(s, "cal").qualified
        assert tasks.create_task(s, live, schema="chest", actor="lead").readers == ("cal",)
        card = scorecards.scorecard(s, "ann", now=later)
        assert card.retest and "expired" in card.retest[0] and card.attempts[0].passed
        assert card.periods[-1].sittings >= 1 and card.periods[-1].exams is not None
        assert card.periods[-1].studies == 6 and card.periods[-1].seconds_per_study == 20.0


def test_a_30_case_mask_exam_through_tasks_fails_the_weaker_readers(sqlite_platform: Platform) -> None:
    platform = sqlite_platform
    uids = small_catalog(platform, patients=10, per_series=3)  # 30 instances
    add_schema(platform, MASK_SCHEMA)
    rng = np.random.default_rng(11)
    truths = {u: ellipse(rng) for u in uids}
    set_id = gold_set(platform, "lesions@1", {u: [lesion(u, t)] for u, t in truths.items()}, uids)
    with platform.session() as s:
        exams.create_exam(s, "lesion-seg", label_set=set_id, thresholds={**MASK_PASS, "dice": 0.7}, actor="lead")
        sittings = {r: qualification.start_attempt(s, platform.objects, "lesion-seg", r, actor="lead")
                    for r in READERS}
    for r, (se, sp) in READERS.items():
        sit(platform, sittings[r], {u: [lesion(u, read_with(rng, t, se, sp))] for u, t in truths.items()})
    with platform.session() as s:
        passed = {r: qualification.get_attempt(s, a.ref).passed for r, a in sittings.items()}
        assert passed == {"r1": True, "r2": True, "r3": True, "r4": False, "r5": False}
        r4 = qualification.get_attempt(s, sittings["r4"].ref)
        assert r4.grade is not None and r4.grade["counts"]["voxel_tp"] > 0
        assert any(f.startswith("sensitivity") for f in r4.failures)
        assert [r.name for r in readers.list_readers(s, qualified=True)] == ["r1", "r2", "r3"]


def test_exam_definitions_are_validated(platform: Platform) -> None:
    uids = small_catalog(platform, patients=2, per_series=2)
    add_schema(platform, CLASS_SCHEMA)
    set_id = gold_set(platform, "chest@1", chest_answers(uids), uids)
    with platform.session() as s:
        with pytest.raises(ValidationFailed, match="lung are not classes"):
            exams.create_exam(s, "x", label_set=set_id, thresholds={"accuracy": 0.9}, negative_labels=["lung"])
        with pytest.raises(ValidationFailed, match="need --negative"):
            exams.create_exam(s, "x", label_set=set_id, thresholds={"specificity": 0.9})
        with pytest.raises(UsageError, match="not a valid exam name"):
            exams.create_exam(s, "bad name", label_set=set_id, thresholds={"accuracy": 0.9})
        with pytest.raises(NotFound, match="label set"):
            exams.create_exam(s, "x", label_set="abcdef", thresholds={"accuracy": 0.9})
        exams.create_exam(s, "x", label_set=set_id, thresholds={"accuracy": 0.9})
        with pytest.raises(Conflict, match="already exists"):
            exams.create_exam(s, "x", label_set=set_id, thresholds={"accuracy": 0.9})
        with pytest.raises(ValidationFailed, match="only a honeypot pool guards"):
            exams.create_exam(s, "y", label_set=set_id, thresholds={"accuracy": 0.9}, guards="x")
        exams.create_exam(s, "pots", label_set=set_id, thresholds={"accuracy": 0.9}, purpose="honeypot")
        with pytest.raises(ValidationFailed, match="honeypot pool, not an exam"):
            exams.create_exam(s, "y", label_set=set_id, thresholds={"accuracy": 0.9}, purpose="honeypot", guards="pots")
        with pytest.raises(UsageError, match="is a honeypot pool, not an exam"):
            qualification.start_attempt(s, platform.objects, "pots", "ann")
        exams.retire_exam(s, "x", actor="lead")
        with pytest.raises(Conflict, match="retired"):
            qualification.start_attempt(s, platform.objects, "x", "ann")
        assert [e.name for e in exams.list_exams(s, purpose="honeypot")] == ["pots"]
        with pytest.raises(UsageError, match="not an exam attempt"):
            qualification.get_attempt(s, "B-1")


# -- honeypots -----------------------------------------------------------------------------------------
def test_honeypots_hide_in_live_queues_are_graded_silently_and_guard_the_certification(platform: Platform) -> None:
    uids = small_catalog(platform, patients=6, per_series=3)  # 18 instances
    add_schema(platform, CLASS_SCHEMA)
    exam_items, pot_items, live_items = uids[:3], uids[3:9], uids[9:]
    exam_answers, pot_answers = chest_answers(exam_items), chest_answers(pot_items)
    exam_set = gold_set(platform, "chest@1", exam_answers, exam_items)
    pot_set = gold_set(platform, "chest@1", pot_answers, pot_items)
    with platform.session() as s:
        exams.create_exam(s, "chest", label_set=exam_set, thresholds={"accuracy": 0.9}, actor="lead")
        exams.create_exam(s, "chest-pots", label_set=pot_set, purpose="honeypot", guards="chest", window=2,
                          thresholds={"accuracy": 0.9}, actor="lead")
        sittings = [qualification.start_attempt(s, platform.objects, "chest", r, actor="lead") for r in ("ann", "bob")]
    for a in sittings:
        sit(platform, a, exam_answers)
    with platform.session() as s:
        assert [r.name for r in readers.list_readers(s, qualified=True)] == ["ann", "bob"]
        task = tasks.create_task(s, tasks.TaskItems(tuple(live_items), "query live"), schema="chest",
                                 readers_per_item=2, seed=4, actor="lead")
        unblinded = tasks.create_task(s, tasks.TaskItems(tuple(live_items[:2]), "query x"), schema="chest",
                                      blinded=False, actor="lead")
        with pytest.raises(UsageError, match="not blinded"):
            honeypots.plant(s, platform.objects, unblinded.ref, "chest-pots")
        with pytest.raises(UsageError, match="is an exam, not a honeypot pool"):
            honeypots.plant(s, platform.objects, task.ref, "chest")
        planted = honeypots.plant(s, platform.objects, task.ref, "chest-pots", per_reader=2, seed=7, actor="lead")
        assert sorted(h.reader for h in planted) == ["ann", "ann", "bob", "bob"]
        assert {h.item for h in planted} <= set(pot_items) and len({h.item for h in planted}) == 4
        assert honeypots.planted_items(s, task.id) == {h.item for h in planted}
        assert tasks.get_task(s, task.ref).items == len(live_items) + 4
        # each queue is still one ordered list (positions 0..n-1), the honeypots somewhere in it
        for r in ("ann", "bob"):
            positions = sorted(s.scalars(select(AssignmentRow.position).where(
                AssignmentRow.task_id == task.id, AssignmentRow.reader == r)))
            assert positions == list(range(len(positions)))
        # what the reader sees of a honeypot is shaped exactly like any other item
        ann = Principal("ann", Role.ANNOTATOR)
        pot = next(h.item for h in planted if h.reader == "ann")
        normal = next(e.item for e in tasks.reader_queue(s, "ann", task=task.ref) if e.item not in pot_items)
        pot_view, normal_view = ({k: v for k, v in access.item_view(s, ann, task.ref, i).to_dict().items()
                                  if k != "item"} for i in (pot, normal))
        assert pot_view == normal_view
        queue = {e.item: e.to_dict() for e in tasks.reader_queue(s, "ann", task=task.ref)}
        assert queue[pot].keys() == queue[normal].keys() and queue[pot]["schema"] == queue[normal]["schema"]
        # a second planting never repeats an item for a reader
        more = honeypots.plant(s, platform.objects, task.ref, "chest-pots", per_reader=5, seed=8, actor="lead")
        assert not {(h.reader, h.item) for h in more} & {(h.reader, h.item) for h in planted}
        mine = {h.item: h.reader for h in planted + more}
    # the readers work through their queues: ann answers the honeypots right, bob wrong
    gold = {**pot_answers}
    for r in ("ann", "bob"):
        with platform.session() as s:
            queue = tasks.reader_queue(s, r, task=task.ref)
        for e in queue:
            label = gold[e.item][0].label if e.item in gold else "normal"
            if r == "bob" and e.item in gold:
                label = CHEST[(CHEST.index(label) + 1) % 3]
            with platform.session() as s:
                tasks.submit(s, platform.objects, task.ref, e.item, r, [cls(e.item, label)], seconds=5)
                qualification.after_submit(s, platform.objects, task.id, e.item, r)
    with platform.session() as s:
        scored = honeypots.results(s, task_id=task.id, scored_only=True)
        assert len(scored) == len(mine)
        assert {h.reader: h.grade.reading == h.grade.reference for h in scored if h.grade} == {"ann": True,
                                                                                               "bob": False}
        # bob's honeypots fell below the pool's threshold: his certification was revoked, he is not assigned
        assert not readers.get_reader(s, "bob").qualified
        bob_cert = certifications.certifications(s, reader="bob")[0]
        assert bob_cert.state is certifications.CertState.REVOKED and "honeypots" in str(bob_cert.reason)
        assert readers.get_reader(s, "ann").qualified
        card = scorecards.scorecard(s, "ann")
        assert card.honeypots is not None and card.honeypots.metrics["accuracy"] == 1.0
        assert card.honeypots.items == sum(1 for r in mine.values() if r == "ann")
        assert card.periods[-1].honeypots is not None and card.retest == ()
        assert not any(item in str(card.to_dict()) for item in mine)  # no honeypot item is ever named
        bob = scorecards.scorecard(s, "bob", period="week")
        assert bob.honeypots is not None and bob.honeypots.metrics["accuracy"] == 0.0
        assert bob.retest and "revoked" in bob.retest[0]
        assert {c.reader for c in scorecards.scorecards(s)} == {"ann", "bob"}
        with pytest.raises(ValidationFailed, match="not a period"):
            scorecards.scorecard(s, "ann", period="year")


# -- migration -----------------------------------------------------------------------------------------
MY_TABLES = {"label_exams", "label_exam_attempts", "label_certifications", "label_honeypots", "label_active_scores",
             "label_active_batches"}


def test_migration_0012_matches_the_tables_and_downgrades(tmp_path: Path) -> None:
    import_all_tables()
    engine = create_engine_for(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        cfg = alembic_config(engine)
        command.upgrade(cfg, "0012")
        assert current_revision(engine) == "0012"
        assert set(inspect(engine).get_table_names()) >= MY_TABLES
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert [d for d in diff if MY_TABLES & _names(d)] == []
        command.downgrade(cfg, "0012-1")
        assert not MY_TABLES & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _names(diff: Any) -> set[str]:
    items = diff if isinstance(diff, list) else [diff]
    found: set[str] = set()
    for item in items:
        for part in item:
            for obj in (part, getattr(part, "table", None)):
                name = getattr(obj, "name", None)
                if isinstance(name, str):
                    found.add(name)
            if isinstance(part, str):
                found.add(part)
    return found


# -- interfaces: REST and CLI -----------------------------------------------------------------------------
def test_the_api_lets_readers_sit_and_see_their_own_results_only(platform: Platform) -> None:
    from fastapi.testclient import TestClient

    from medcycle.auth import audit
    from tests.labels.task_helpers import token_for
    from tests.labels.test_api import make_app

    uids = small_catalog(platform, patients=3, per_series=2)  # 6 instances
    add_schema(platform, CLASS_SCHEMA)
    answers = chest_answers(uids[:3])
    set_id = gold_set(platform, "chest@1", answers, uids[:3])
    pot_set = gold_set(platform, "chest@1", chest_answers(uids[3:5]), uids[3:5])
    lead, ann, bob = token_for(platform, "lead", "admin"), token_for(platform, "ann", "annotator"), \
        token_for(platform, "bob", "annotator")
    with TestClient(make_app(platform), raise_server_exceptions=False) as c:
        body = {"name": "chest", "label_set": set_id, "thresholds": {"accuracy": 0.9}}
        assert c.post("/v1/labels/exams", json=body, headers=ann).status_code == 403
        r = c.post("/v1/labels/exams", json=body, headers=lead)
        assert r.status_code == 201 and r.json()["items"] == 3
        bad = c.post("/v1/labels/exams", json={**body, "name": "x", "thresholds": {"dice": 0.9}}, headers=lead)
        assert bad.status_code == 422 and "cannot be a pass threshold" in bad.json()["error"]["message"]
        assert c.post("/v1/labels/exams", json={"name": "pots", "label_set": pot_set, "purpose": "honeypot",
                                                "thresholds": {"accuracy": 0.9}}, headers=lead).status_code == 201
        assert [e["name"] for e in c.get("/v1/labels/exams", headers=bob).json()] == ["chest", "pots"]
        # a reader starts their own sitting; not someone else's (refused and audited)
        r = c.post("/v1/labels/exams/chest/attempts", json={"reader": "ann"}, headers=bob)
        assert r.status_code == 403
        attempt = c.post("/v1/labels/exams/chest/attempts", json={}, headers=ann).json()
        assert attempt["reader"] == "ann" and attempt["state"] == "open"
        for entry in c.get("/v1/labels/queue", headers=ann).json():
            label = answers[entry["item"]][0].label
            r = c.post(f"/v1/labels/tasks/{entry['task']}/items/{entry['item']}/annotations",
                       json={"annotations": [{"label": label}], "seconds": 12}, headers=ann)
            assert r.status_code == 201, r.text
        assert c.post(f"/v1/labels/attempts/{attempt['ref']}/score", headers=bob).status_code == 403
        # the last reading of the sitting graded it at once (no explicit score call needed)
        scored = c.get(f"/v1/labels/attempts/{attempt['ref']}", headers=ann).json()
        assert scored["passed"] is True and scored["grade"]["metrics"]["accuracy"] == 1.0
        mine = c.get(f"/v1/labels/attempts/{attempt['ref']}?items=true", headers=ann).json()
        assert "item_grades" not in mine  # the gold answers stay hidden from readers
        lead_view = c.get(f"/v1/labels/attempts/{attempt['ref']}?items=true", headers=lead).json()
        assert len(lead_view["item_grades"]) == 3
        assert [a["ref"] for a in c.get("/v1/labels/attempts", headers=ann).json()] == [attempt["ref"]]
        assert c.get("/v1/labels/attempts?reader=ann", headers=bob).status_code == 403
        certs = c.get("/v1/labels/certifications", headers=ann).json()
        assert [(x["exam"], x["state"]) for x in certs] == [("chest", "active")]
        card = c.get("/v1/labels/readers/ann/scorecard", headers=ann).json()
        assert card["qualified"] and card["periods"][-1]["studies"] == 3
        assert c.get("/v1/labels/readers/ann/scorecard", headers=bob).status_code == 403
        assert c.get("/v1/labels/scorecards", headers=ann).status_code == 403
        assert [x["reader"] for x in c.get("/v1/labels/scorecards", headers=lead).json()] == ["ann"]  # readers only
        # honeypots: planted by leads, listed only to leads
        live = c.post("/v1/labels/tasks", json={"schema": "chest", "query": 'modality != "none"'}, headers=lead)
        task = live.json()["ref"]
        r = c.post(f"/v1/labels/tasks/{task}/honeypots", json={"pool": "pots", "seed": 1}, headers=lead)
        assert r.status_code == 201, r.text
        assert c.get("/v1/labels/honeypots", headers=ann).status_code == 403
        assert len(c.get(f"/v1/labels/honeypots?task={task}", headers=lead).json()) == len(r.json())
        assert c.post("/v1/labels/qualification/refresh", headers=lead).json()["expired"] == []
        r = c.post("/v1/labels/readers/ann/certifications/chest/revoke", json={"reason": "audit"}, headers=lead)
        assert r.status_code == 200 and r.json()["state"] == "revoked"
        assert {r["name"]: r["qualified"] for r in c.get("/v1/labels/readers", headers=lead).json()} == {"ann": False}
    with platform.session() as s:
        denied = [e.action for e in audit.query(s, actor="bob") if e.outcome == "denied"]
    assert "labels.exam.start" in denied and "labels.scorecard.read" in denied


def test_the_cli_runs_an_exam_and_shows_scorecards(platform: Platform, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import os

    from medcycle.cli.errors import run
    from tests.labels.test_cli import make_app

    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(platform.settings.home))
    monkeypatch.setenv("MEDCYCLE_DATABASE_URL", platform.settings.database_url)
    monkeypatch.setenv("COLUMNS", "200")
    uids = small_catalog(platform, patients=2, per_series=2)
    add_schema(platform, CLASS_SCHEMA)
    answers = chest_answers(uids)
    set_id = gold_set(platform, "chest@1", answers, uids)

    def cli(*args: str) -> tuple[int, str, str]:
        code = run(make_app(), ["labels", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = cli("exam", "add", "chest", "--set", set_id[:10], "--pass", "accuracy=0.8", "--pass",
                         "kappa=0.5", "--valid-days", "365", "--json")
    assert code == 0, err
    assert json.loads(out)["thresholds"] == {"accuracy": 0.8, "kappa": 0.5}
    code, out, err = cli("exam", "add", "x", "--set", set_id, "--pass", "accuracy")
    assert code == 2 and "METRIC=VALUE" in err
    code, out, err = cli("exam", "start", "chest", "--reader", "cal", "--json")
    assert code == 0, err
    attempt = json.loads(out)
    for i, (item, anns) in enumerate(answers.items()):
        label = anns[0].label if i else "effusion" if anns[0].label != "effusion" else "normal"  # one wrong
        assert cli("submit", attempt["task"], item, "--reader", "cal", "--label", label)[0] == 0
    code, out, err = cli("exam", "attempt", attempt["ref"])  # the last reading graded the sitting at once
    assert code == 0 and "failed" in out and "accuracy 0.750 < 0.8" in out, out + err
    code, _out, err = cli("exam", "score", attempt["ref"])
    assert code == 5 and "already failed" in err and "new sitting" in err
    code, out, _ = cli("exam", "attempts", "--reader", "cal", "--json")
    assert [a["state"] for a in json.loads(out)] == ["failed"]
    code, out, _ = cli("qualification", "status", "--json")
    assert [(c["reader"], c["state"]) for c in json.loads(out)] == [("cal", "failed")]
    code, out, _ = cli("qualification", "status", "--due-within", "30")
    assert code == 0 and "cal" in out
    code, out, _ = cli("scorecard", "cal")
    assert code == 0 and "chest: failed" in out
    code, out, _ = cli("scorecard", "--json")
    assert [c["reader"] for c in json.loads(out)] == ["cal"]
    code, out, _ = cli("qualification", "refresh")
    assert code == 0 and "graded 0 sitting(s)" in out
    code, out, err = cli("exam", "score", attempt["ref"])
    assert code == 5 and "already failed" in err
