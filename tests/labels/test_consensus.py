"""Consensus: class majority, mask voting, STAPLE (binary, multi-label) recovery on phantoms, box clustering."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from medcycle.errors import ValidationFailed
from medcycle.labels.consensus import (
    BOX_CLUSTER,
    MAJORITY,
    MULTILABEL_STAPLE,
    STAPLE,
    cluster_boxes,
    consensus_set,
    majority_class,
    mask_consensus,
    multilabel_mask_consensus,
    multilabel_staple,
    staple,
    vote,
)
from medcycle.labels.mask_agreement import overlap
from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind, Mask

READERS = {"r1": (0.95, 0.99), "r2": (0.90, 0.98), "r3": (0.85, 0.97), "r4": (0.80, 0.96), "r5": (0.70, 0.95)}


def ellipse(rng: np.random.Generator, size: int = 48, scale: float = 1.0) -> np.ndarray[Any, Any]:
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(16, 32, 2)
    ry, rx = rng.uniform(5, 12, 2) * scale
    theta = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    return np.asarray((u / rx) ** 2 + (v / ry) ** 2 <= 1)


def read_with(rng: np.random.Generator, truth: np.ndarray[Any, Any], sensitivity: float,
              specificity: float) -> np.ndarray[Any, Any]:
    """A simulated reader: keeps each true pixel with p = sensitivity, adds each other pixel with 1 - specificity."""
    draw = rng.random(truth.shape)
    return np.where(truth, draw < sensitivity, draw >= specificity).astype(np.uint8)


def phantoms(seed: int = 11, n: int = 30) -> tuple[list[np.ndarray[Any, Any]], list[Annotation]]:
    rng = np.random.default_rng(seed)
    truths = [ellipse(rng) for _ in range(n)]
    anns = [Annotation(f"img{i:02d}", "lesion", Kind.MASK, Mask(read_with(rng, t, se, sp), (0.7, 0.7)), reader=r)
            for i, t in enumerate(truths) for r, (se, sp) in READERS.items()]
    return truths, anns


def mean_dice(consensus: list[Annotation], truths: list[np.ndarray[Any, Any]]) -> float:
    by_image = {a.image: a.geometry for a in consensus}
    dices = []
    for i, t in enumerate(truths):
        m = by_image.get(f"img{i:02d}")
        got = m if isinstance(m, Mask) else Mask(np.zeros(t.shape, np.uint8), (0.7, 0.7))
        dices.append(overlap(got, Mask(t.astype(np.uint8), (0.7, 0.7)))[0])
    return float(np.mean(dices))


def test_staple_recovers_reader_rates_and_beats_majority_vote() -> None:
    truths, anns = phantoms()
    result = mask_consensus(anns, "lesion", method="staple")
    assert result.method == STAPLE
    assert result.readers == tuple(READERS)
    for reader, (se, sp) in READERS.items():
        estimate = result.estimate(reader, "lesion")
        assert estimate.sensitivity == pytest.approx(se, abs=0.03), reader
        assert estimate.specificity == pytest.approx(sp, abs=0.03), reader
    # the estimates keep the readers' order of quality
    assert [result.estimate(r).sensitivity for r in READERS] == sorted(
        (result.estimate(r).sensitivity for r in READERS), reverse=True)
    majority = mask_consensus(anns, "lesion", method="majority")
    assert majority.method == MAJORITY and majority.estimates == ()
    staple_dice, vote_dice = mean_dice(list(result.annotations), truths), mean_dice(list(majority.annotations), truths)
    assert staple_dice >= vote_dice
    assert staple_dice > 0.98
    first = result.annotations[0]
    assert first.reader == STAPLE and first.kind == Kind.MASK and first.label == "lesion"
    assert isinstance(first.geometry, Mask) and first.geometry.spacing == (0.7, 0.7)
    assert first.attributes["readers"] == list(READERS)
    # seeded, so deterministic
    again = mask_consensus(phantoms()[1], "lesion", method="staple")
    assert again.estimates == result.estimates


def test_staple_wrapper_equals_simpleitk() -> None:
    rng = np.random.default_rng(2)
    truth = ellipse(rng, 40) | ellipse(rng, 40, 0.5)
    masks = [read_with(rng, truth, se, sp) for se, sp in READERS.values()]
    ours = staple(masks)
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    f.SetMaximumIterations(1000)
    reference = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in masks]))  # 2D, not pooled
    assert ours.probability.shape == truth.shape
    np.testing.assert_allclose(ours.probability, reference, atol=1e-6)
    assert ours.sensitivity == pytest.approx(f.GetSensitivity(), abs=1e-9)
    assert ours.specificity == pytest.approx(f.GetSpecificity(), abs=1e-9)
    assert np.array_equal(ours.consensus, reference >= 0.5)
    assert ours.iterations == f.GetElapsedIterations()
    assert np.array_equal(staple(masks, threshold=0.9).consensus, reference >= 0.9)
    with pytest.raises(ValidationFailed, match="threshold"):
        staple(masks, threshold=1.0)
    with pytest.raises(ValidationFailed, match="at least two readers"):
        staple(masks[:1])
    with pytest.raises(ValidationFailed, match="different shapes"):
        staple([masks[0], masks[1][:-1]])
    with pytest.raises(ValidationFailed, match="Threshold probabilities"):
        staple([masks[0], masks[1].astype(float)])


def organ_with_lesion(rng: np.random.Generator, size: int = 48) -> np.ndarray[Any, Any]:
    """0 background, 1 organ, 2 a lesion inside the organ."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(18, 30, 2)
    theta = rng.uniform(0, np.pi)

    def inside(y: float, x: float, ry: float, rx: float) -> np.ndarray[Any, Any]:
        u = (xx - x) * np.cos(theta) + (yy - y) * np.sin(theta)
        v = -(xx - x) * np.sin(theta) + (yy - y) * np.cos(theta)
        return np.asarray((u / rx) ** 2 + (v / ry) ** 2 <= 1)

    organ = inside(cy, cx, *rng.uniform(12, 16, 2))
    lesion = inside(cy + rng.uniform(-3, 3), cx + rng.uniform(-3, 3), *rng.uniform(4, 7, 2))
    return np.where(lesion, 2, np.where(organ, 1, 0)).astype(np.uint8)


def test_multilabel_staple_equals_simpleitk_and_recovers_classes() -> None:
    rng = np.random.default_rng(4)
    truths = [organ_with_lesion(rng) for _ in range(12)]
    rates = {"a": 0.97, "b": 0.93, "c": 0.9, "d": 0.85}  # each pixel right with p, else another class at random
    anns = []
    maps: dict[str, list[np.ndarray[Any, Any]]] = {r: [] for r in rates}
    for i, truth in enumerate(truths):
        for r, keep in rates.items():
            wrong = rng.random(truth.shape) >= keep
            other = (truth + rng.integers(1, 3, truth.shape)) % 3
            given = np.where(wrong, other, truth).astype(np.uint8)
            maps[r].append(given)
            for k, label in ((1, "organ"), (2, "lesion")):
                anns.append(Annotation(f"i{i}", label, Kind.MASK, Mask((given == k).astype(np.uint8)), reader=r))
    result = multilabel_mask_consensus(anns, ["organ", "lesion"])
    assert result.method == MULTILABEL_STAPLE
    for r, keep in rates.items():
        for label in ("organ", "lesion"):
            estimate = result.estimate(r, label)
            assert estimate.sensitivity == pytest.approx(keep, abs=0.03), (r, label)
            assert estimate.specificity == pytest.approx(1 - (1 - keep) / 2, abs=0.03), (r, label)
    for a in result.annotations:
        truth = truths[int(a.image[1:])] == (1 if a.label == "organ" else 2)
        assert isinstance(a.geometry, Mask)
        assert overlap(a.geometry, Mask(truth.astype(np.uint8)))[0] > 0.95
    # the wrapper equals SimpleITK run on the unpooled label maps of one image
    ours = multilabel_staple([maps[r][0] for r in rates])
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(255)
    f.SetMaximumNumberOfIterations(1000)
    reference = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(maps[r][0]) for r in rates]))
    assert np.array_equal(ours.consensus, np.where(reference == 255, 0, reference))
    for k in range(len(rates)):
        np.testing.assert_allclose(ours.confusion[k].ravel(), f.GetConfusionMatrix(k), atol=1e-9)
    # on two labels its rates agree with binary STAPLE's
    binary = [(m[0] == 2).astype(np.uint8) for m in maps.values()]
    two, one = multilabel_staple(binary), staple(binary)
    np.testing.assert_allclose(two.sensitivity[:, 1], one.sensitivity, atol=0.02)
    np.testing.assert_allclose(two.specificity[:, 1], one.specificity, atol=0.02)


def test_multilabel_consensus_errors() -> None:
    square = np.zeros((8, 8), np.uint8)
    square[2:6, 2:6] = 1
    anns = [Annotation("i", "organ", Kind.MASK, Mask(square), reader="a"),
            Annotation("i", "lesion", Kind.MASK, Mask(square), reader="a"),
            Annotation("i", "organ", Kind.MASK, Mask(square), reader="b")]
    with pytest.raises(ValidationFailed, match="overlapping classes"):
        multilabel_mask_consensus(anns, ["organ", "lesion"])
    with pytest.raises(ValidationFailed, match="each once"):
        multilabel_mask_consensus(anns, ["organ", "organ"])
    with pytest.raises(ValidationFailed, match="at least two readers"):
        multilabel_mask_consensus(anns[:2], ["organ"])


def test_mask_majority_is_strict_and_equals_label_voting() -> None:
    rng = np.random.default_rng(8)
    masks = [(rng.random((20, 24)) < 0.5).astype(np.uint8) for _ in range(4)]
    voted = vote(masks)
    votes = np.sum(masks, axis=0)
    assert np.array_equal(voted, (votes > 2).astype(np.uint8))  # 2 of 4 is a tie: background
    assert np.array_equal(vote(masks[:3]), (np.sum(masks[:3], axis=0) >= 2).astype(np.uint8))
    labels = [np.array([[1, 2, 0]]), np.array([[1, 2, 2]]), np.array([[0, 1, 2]])]
    assert vote(labels).tolist() == [[1, 2, 2]]
    with pytest.raises(ValidationFailed, match="2D or 3D"):
        vote([np.zeros(5, np.uint8), np.zeros(5, np.uint8)])


def test_mask_consensus_reads_geometry_and_errors() -> None:
    a = np.zeros((10, 10), np.uint8)
    a[2:7, 2:7] = 1
    b = np.roll(a, 1, axis=1)
    geometry = {"spacing": (0.5, 0.8), "origin": (1.0, 2.0), "direction": (1.0, 0.0, 0.0, 1.0)}
    anns = [Annotation("i1", "lesion", Kind.MASK, Mask(a, **geometry), reader="x"),  # type: ignore[arg-type]
            Annotation("i1", "lesion", Kind.MASK, Mask(b, **geometry), reader="y"),  # type: ignore[arg-type]
            Annotation("i1", "lesion", Kind.MASK, Mask(a, **geometry), reader="z"),  # type: ignore[arg-type]
            Annotation("i2", "lesion", Kind.MASK, Mask(a, **geometry), reader="x")]  # type: ignore[arg-type]
    result = mask_consensus(anns, "lesion", method="majority")
    assert result.skipped == ("i2",)  # one reader only
    (only,) = result.annotations
    assert isinstance(only.geometry, Mask)
    assert only.geometry.origin == (1.0, 2.0) and only.geometry.spacing == (0.5, 0.8)
    assert np.array_equal(only.geometry.array, a)
    # z read i1 and i2 and drew nothing on i2: a missing mask is empty only when read says so
    read = {"x": ["i1", "i2"], "y": ["i1", "i2"], "z": ["i1", "i2"]}
    with pytest.raises(ValidationFailed, match="every reader on every image") as err:
        mask_consensus(anns, "lesion", method="staple")
    assert err.value.hint and "read=" in err.value.hint
    staple_result = mask_consensus(anns, "lesion", method="staple", read=read)
    assert {a.image for a in staple_result.annotations} == {"i1"}  # 1 of 3 on i2: no consensus there
    assert len(staple_result.estimates) == 3
    with pytest.raises(ValidationFailed, match="unknown consensus method"):
        mask_consensus(anns, "lesion", method="mean")
    # readers who read an image and drew nothing: no consensus, rates undefined
    nothing = mask_consensus([], "lesion", read={"x": ["i9"], "y": ["i9"]})
    assert nothing.annotations == () and len(nothing.estimates) == 2
    assert np.isnan(nothing.estimate("x").sensitivity)
    with pytest.raises(ValidationFailed, match="no estimate"):
        result.estimate("x")
    moved = Annotation("i1", "lesion", Kind.MASK, Mask(b, spacing=(0.5, 0.9)), reader="w")
    with pytest.raises(ValidationFailed, match="different spacings"):
        mask_consensus([*anns, moved], "lesion", method="majority")


def cls(image: str, label: str, reader: str) -> Annotation:
    return Annotation(image, label, Kind.CLASS, reader=reader)


def test_majority_class_ties_and_rules() -> None:
    anns = [cls("i1", "benign", "a"), cls("i1", "benign", "b"), cls("i1", "malignant", "c"),
            cls("i2", "benign", "a"), cls("i2", "malignant", "b"),
            cls("i3", "malignant", "a")]
    by_order = majority_class(anns, ["malignant", "benign"])
    assert [(a.image, a.label) for a in by_order.annotations] == [("i1", "benign"), ("i2", "malignant")]
    assert by_order.ties == ("i2",)
    assert by_order.skipped == ("i3",)
    first = by_order.annotations[0]
    assert first.reader == MAJORITY and first.score == pytest.approx(2 / 3)
    assert first.attributes == {"votes": {"benign": 2, "malignant": 1}, "readers": ["a", "b", "c"], "tie": False}
    assert [a.label for a in majority_class(anns, ["benign", "malignant"]).annotations] == ["benign", "benign"]
    adjudicate = majority_class(anns, ["malignant", "benign"], tie_break="none")
    assert [a.image for a in adjudicate.annotations] == ["i1"] and adjudicate.ties == ("i2",)
    assert len(majority_class(anns, ["malignant", "benign"], min_readers=1).annotations) == 3
    with pytest.raises(ValidationFailed, match="unknown tie break"):
        majority_class(anns, ["malignant", "benign"], tie_break="coin")
    with pytest.raises(ValidationFailed, match="not in the class list"):
        majority_class(anns, ["benign"])
    with pytest.raises(ValidationFailed, match="at least two readers"):
        majority_class(anns[-1:], ["malignant"])
    with pytest.raises(ValidationFailed, match="two classes"):
        majority_class([*anns, cls("i1", "malignant", "a")], ["malignant", "benign"])


def box(image: str, reader: str, x0: float, y0: float, x1: float, y1: float, label: str = "nodule",
        z: int | None = None) -> Annotation:
    return Annotation(image, label, Kind.BOX, Box(x0, y0, x1, y1, z), reader=reader)


def test_box_clustering() -> None:
    anns = [box("i1", "a", 10, 10, 20, 20), box("i1", "b", 11, 10, 21, 20), box("i1", "c", 9, 11, 19, 22),
            box("i1", "a", 50, 50, 60, 60),  # only a: dropped by the default rule (2 of 3)
            box("i1", "b", 12, 12, 18, 18, label="mass"), box("i1", "c", 12, 12, 18, 18, label="mass"),
            box("i1", "a", 30, 30, 40, 40), box("i1", "a", 31, 30, 41, 40),  # a's two boxes never merge
            box("i1", "b", 30, 30, 40, 40, z=2)]  # another slice
    result = cluster_boxes(anns)
    kept = {(a.label, a.geometry) for a in result.annotations}
    assert kept == {("nodule", Box(10, 10, 20, 20)), ("mass", Box(12, 12, 18, 18))}
    nodule = next(a for a in result.annotations if a.label == "nodule")
    assert nodule.reader == BOX_CLUSTER and nodule.score == 1.0
    assert nodule.attributes == {"agreeing": 3, "readers": 3, "members": ["a", "b", "c"]}
    assert len(result.clusters) == 6
    assert all(len({r for r, _ in c.members}) == c.agreeing for c in result.clusters)
    mean = cluster_boxes(anns, center="mean", min_readers=1)
    assert len(mean.annotations) == 6
    assert Box(10, 31 / 3, 20, 62 / 3) in {a.geometry for a in mean.annotations}
    # with read, d read i1 and drew nothing: 4 readers, so 3 are needed
    read = {"a": ["i1"], "b": ["i1"], "c": ["i1"], "d": ["i1"]}
    assert {a.label for a in cluster_boxes(anns, read=read).annotations} == {"nodule"}
    alone = cluster_boxes([*anns, box("i2", "a", 0, 0, 5, 5)])
    assert alone.skipped == ("i2",) and {a.image for a in alone.annotations} == {"i1"}
    with pytest.raises(ValidationFailed, match="min_readers"):
        cluster_boxes(anns, min_readers=0)
    with pytest.raises(ValidationFailed, match="unknown box centre"):
        cluster_boxes(anns, center="mode")
    with pytest.raises(ValidationFailed, match="at least two readers"):
        cluster_boxes(anns[:1])


def test_consensus_becomes_a_label_set() -> None:
    source = AnnotationSet.of([ImageRef("i1", 64, 64), ImageRef("i2", 64, 64)],
                              [cls("i1", "benign", "a"), cls("i1", "benign", "b"), cls("i2", "malignant", "a"),
                               cls("i2", "malignant", "b"), box("i1", "a", 1, 1, 5, 5), box("i1", "b", 1, 1, 5, 6)],
                              ["benign", "malignant", "nodule"])
    classes = majority_class(source.annotations, source.classes)
    boxes = cluster_boxes(source.annotations)
    labels = consensus_set(source, classes.annotations, boxes.annotations)
    assert labels.images == source.images and labels.classes == source.classes
    assert len(labels.annotations) == 3
    assert {a.reader for a in labels.annotations} == {MAJORITY, BOX_CLUSTER}
    with pytest.raises(ValidationFailed, match="not consensus annotations"):
        consensus_set(source, source.annotations)


def test_docs_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "labels.md"
    section = doc.read_text().split("## Agreement and consensus", 1)[1].split("\n## ", 1)[0]
    example = next(b for b in re.findall(r"```python\n(.*?)```", section, flags=re.S) if "consensus_set(" in b)
    exec(compile(example, str(doc), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "consensus:staple" in out and "'hd95'" in out
